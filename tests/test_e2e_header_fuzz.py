"""Headers a view puts on the 101, fuzzed through real servers: what the pure rule accepts goes
out exactly once and intact; anything else is a 500 with nothing of it on the wire."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgroups.handshake import check_header

from .conftest import Server
from .wsclient import raw_handshake

pytestmark = pytest.mark.e2e

#: Headers a 101 may carry besides the view's own.
HANDSHAKE_HEADERS = {"upgrade", "connection", "sec-websocket-accept", "server", "date"}

names = st.one_of(
    st.sampled_from(["X-Fuzz", "Upgrade", "connection", "Sec-WebSocket-Accept", "Content-Length", "Set-Cookie"]),
    st.text(alphabet=st.sampled_from("XYZ-_!#$%&'*+.^`|~0129 :;\r\n\x00\x0b\xe9"), min_size=1, max_size=12),
)
values = st.lists(
    st.one_of(
        st.sampled_from(["\r", "\n", "\x00", "\r\nX-Evil: 1", "\t", "\x0b", "\x7f", " ", "\u20ac", "\xe9"]),
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    ),
    max_size=30,
).map("".join)


def _accepted(name: str, value: str) -> bool:
    try:
        check_header(name, value)
    except (TypeError, ValueError):
        return False
    return name.lower() != "set-cookie"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, value=values)
def test_fuzzed_101_headers_go_out_intact_or_not_at_all(server: Server, name: str, value: str) -> None:
    response = raw_handshake(server.port, "/bad-header?" + urlencode({"name": name, "value": value}))
    try:
        head_names = {key.lower() for key, _ in response.headers}
        assert "x-evil" not in head_names, response.headers
        if _accepted(name, value):
            assert response.status == 101, (name, value, response.status_line)
            assert response.header(name) == [value.strip(" \t")]
            assert head_names <= HANDSHAKE_HEADERS | {name.lower()}
        else:
            assert response.status == 500, (name, value, response.status_line)
            assert name.lower() in HANDSHAKE_HEADERS | {"content-length", "content-type", "set-cookie"} or (
                name.lower() not in head_names
            )
    finally:
        response.close()
    assert server.process.poll() is None
