from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.http import HttpResponse
from hypothesis import given
from hypothesis import strategies as st

from wsgroups.codes import MAX_CLOSE_REASON_BYTES, is_sendable_close_code
from wsgroups.handshake import (
    accept_headers,
    check_close,
    check_cookie,
    check_header,
    check_subprotocol,
    django_allowed_hosts,
    head_refusal,
    origin_allowed,
    rejection_headers,
)

FORBIDDEN = ("\r", "\n", "\x00")

# --- check_header -------------------------------------------------------------------


def test_check_header_returns_valid_pair_unchanged():
    assert check_header("MyHeader", "MyHeaderData") == ("MyHeader", "MyHeaderData")


def test_check_header_accepts_empty_value_and_refuses_non_ascii_latin1():
    with pytest.raises(ValueError, match="not ASCII"):
        check_header("X-Name", "caf\xe9")  # daphne would send it as UTF-8
    assert check_header("X-Empty", "") == ("X-Empty", "")


@pytest.mark.parametrize(
    "name",
    [
        "Upgrade",
        "upgrade",
        "CONNECTION",
        "Connection",
        "Content-Length",
        "content-length",
        "Transfer-Encoding",
        "TRANSFER-ENCODING",
        "Sec-WebSocket-Accept",
        "sec-websocket-protocol",
        "SEC-WEBSOCKET-EXTENSIONS",
        "Sec-WebSocket-Anything",
    ],
)
def test_check_header_rejects_reserved_names_case_insensitively(name):
    with pytest.raises(ValueError, match="headers"):
        check_header(name, "x")


@pytest.mark.parametrize("name", ["Sec-WebSocketX", "X-Upgrade", "Connection-Info", "Sec-Fetch-Mode"])
def test_check_header_allows_names_that_only_resemble_reserved_ones(name):
    assert check_header(name, "v") == (name, "v")


@pytest.mark.parametrize("char", FORBIDDEN)
def test_check_header_rejects_cr_lf_nul_in_value(char):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        check_header("X-A", f"a{char}Set-Cookie: evil=1")


@pytest.mark.parametrize("char", FORBIDDEN)
def test_check_header_rejects_cr_lf_nul_in_name(char):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        check_header(f"X-A{char}B", "v")


@pytest.mark.parametrize("name", ["", "X A", "X:A", "X(A)", "Ünicode", "X/A", 'X"A', "X\tA"])
def test_check_header_rejects_non_token_names(name):
    with pytest.raises(ValueError, match="headers"):
        check_header(name, "v")


@pytest.mark.parametrize("value", ["\u20ac", "snow \u2603", "\U0001f600", "\xe9", "\x80"])
def test_check_header_rejects_non_ascii_values(value):
    with pytest.raises(ValueError, match="not ASCII"):
        check_header("X-A", value)


@pytest.mark.parametrize(("name", "value"), [(b"X-A", "v"), ("X-A", b"v"), ("X-A", 1), (None, "v")])
def test_check_header_raises_type_error_for_non_str(name, value):
    with pytest.raises(TypeError, match="headers"):
        check_header(name, value)


def test_check_header_error_names_the_given_argument():
    with pytest.raises(ValueError, match=r"^extra:"):
        check_header("Upgrade", "x", argument="extra")


@given(
    name=st.sampled_from(["X-A", "MyHeader", "Cache-Control"]),
    before=st.text(),
    bad=st.sampled_from(FORBIDDEN),
    after=st.text(),
)
def test_property_any_value_with_cr_lf_nul_is_rejected(name, before, bad, after):
    with pytest.raises(ValueError):
        check_header(name, before + bad + after)


@given(name=st.text(min_size=1, max_size=20), value=st.text(max_size=50))
def test_property_accepted_headers_are_free_of_cr_lf_nul(name, value):
    try:
        out_name, out_value = check_header(name, value)
    except ValueError:
        return
    for char in FORBIDDEN:
        assert char not in out_name
        assert char not in out_value
    assert out_value.isascii()


# --- check_cookie -------------------------------------------------------------------


@pytest.mark.parametrize("cookie", ["MyCookie1=123", "a=b; Path=/; HttpOnly", "empty="])
def test_check_cookie_accepts_name_value_forms(cookie):
    assert check_cookie(cookie) == cookie


@pytest.mark.parametrize("cookie", ["novalue", "=value", "bad name=1", "a:b=1"])
def test_check_cookie_rejects_malformed(cookie):
    with pytest.raises(ValueError, match="cookies"):
        check_cookie(cookie)


@pytest.mark.parametrize("char", FORBIDDEN)
def test_check_cookie_rejects_cr_lf_nul(char):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        check_cookie(f"a=b{char}Set-Cookie: c=d")


@pytest.mark.parametrize("cookie", ["a=\u20ac", "x=caf\xe9"])
def test_check_cookie_rejects_non_ascii(cookie):
    with pytest.raises(ValueError, match="not ASCII"):
        check_cookie(cookie)


@pytest.mark.parametrize("cookie", [b"a=b", None, 3, ("a", "b")])
def test_check_cookie_rejects_non_str(cookie):
    with pytest.raises(TypeError, match="cookies"):
        check_cookie(cookie)


# --- accept_headers -----------------------------------------------------------------


def test_accept_headers_none_gives_no_headers():
    assert accept_headers(None, None) == []
    assert accept_headers([], {}) == []


def test_accept_headers_encodes_headers_then_cookies_in_order():
    pairs = accept_headers(
        ["MyCookie1=123", "MyCookie2=456", "Third=3; Path=/"],
        {"MyHeader": "MyHeaderData", "X-Other": "o"},
    )
    assert pairs == [
        (b"MyHeader", b"MyHeaderData"),
        (b"X-Other", b"o"),
        (b"Set-Cookie", b"MyCookie1=123"),
        (b"Set-Cookie", b"MyCookie2=456"),
        (b"Set-Cookie", b"Third=3; Path=/"),
    ]


def test_accept_headers_accepts_any_iterable_of_cookies():
    pairs = accept_headers(iter(["a=1", "b=2"]), None)
    assert pairs == [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]


def test_accept_headers_rejects_cookies_as_one_string():
    with pytest.raises(TypeError, match="cookies"):
        accept_headers("a=b", None)


@pytest.mark.parametrize("name", ["Set-Cookie", "set-cookie", "SET-COOKIE"])
def test_accept_headers_rejects_set_cookie_header(name):
    with pytest.raises(ValueError, match="cookies="):
        accept_headers(None, {name: "a=b"})


def test_accept_headers_rejects_non_mapping_headers():
    with pytest.raises(TypeError, match="headers"):
        accept_headers(None, [("X-A", "1")])


def test_accept_headers_rejects_reserved_and_injected_headers():
    with pytest.raises(ValueError):
        accept_headers(None, {"Sec-WebSocket-Accept": "forged"})
    with pytest.raises(ValueError):
        accept_headers(None, {"X-A": "1\r\nX-B: 2"})
    with pytest.raises(ValueError):
        accept_headers(["a=1\r\nX-B: 2"], None)


# --- check_subprotocol --------------------------------------------------------------


def test_check_subprotocol_none_stays_none():
    assert check_subprotocol(None, []) is None
    assert check_subprotocol(None, ["chat"]) is None


def test_check_subprotocol_returns_offered_choice():
    assert check_subprotocol("chat.v2", ["chat.v1", "chat.v2"]) == "chat.v2"


@pytest.mark.parametrize(("chosen", "offered"), [("chat", []), ("Chat", ["chat"]), ("x", ["chat", "y"])])
def test_check_subprotocol_rejects_unoffered(chosen, offered):
    with pytest.raises(ValueError, match="not offered"):
        check_subprotocol(chosen, offered)


# --- check_close --------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1012, 1013, 1014, 3000, 3500, 4000, 4999],
)
def test_check_close_allows_sendable_codes(code):
    assert check_close(code, None) == (code, "")


def test_check_close_refuses_1010_which_only_clients_send():
    with pytest.raises(ValueError, match="1011-1014"):
        check_close(1010, None)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, -1000])
def test_check_close_rejects_unsendable_codes_naming_code(code):
    with pytest.raises(ValueError, match=r"^code"):
        check_close(code, None)


@pytest.mark.parametrize("code", [True, 1000.0, "1000", None])
def test_check_close_rejects_non_int_codes(code):
    with pytest.raises(TypeError, match=r"^code"):
        check_close(code, None)


def test_check_close_returns_plain_int_for_enum_code():
    from wsgroups.codes import CloseCode

    code, reason = check_close(CloseCode.GOING_AWAY, "bye")
    assert (code, reason) == (1001, "bye")
    assert type(code) is int


@pytest.mark.parametrize(
    "reason",
    ["x" * 123, "\xe9" * 61 + "x", "\u20ac" * 41, "\U0001f600" * 30 + "abc", ""],
)
def test_check_close_accepts_reasons_up_to_123_utf8_bytes(reason):
    assert len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
    assert check_close(1000, reason) == (1000, reason)


@pytest.mark.parametrize(
    "reason",
    ["x" * 124, "\xe9" * 62, "\u20ac" * 41 + "x", "\U0001f600" * 31, "\u20ac" * 42],
)
def test_check_close_rejects_reasons_over_123_utf8_bytes_naming_message(reason):
    assert len(reason.encode("utf-8")) > MAX_CLOSE_REASON_BYTES
    with pytest.raises(ValueError, match=r"^message"):
        check_close(1000, reason)


def test_check_close_counts_bytes_not_characters():
    # 62 characters, 124 bytes: fewer than 123 characters but too long for a close frame.
    with pytest.raises(ValueError, match="124"):
        check_close(1000, "\xe9" * 62)


@pytest.mark.parametrize("reason", [b"bye", 3])
def test_check_close_rejects_non_str_reason_naming_message(reason):
    with pytest.raises(TypeError, match=r"^message"):
        check_close(1000, reason)


# --- origin_allowed -----------------------------------------------------------------

HOSTS = ["127.0.0.1", "localhost", "[::1]", ".example.com"]


def test_origin_allowed_without_origin_header():
    assert origin_allowed(None, [], []) is True


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:8000",
        "https://localhost:8443",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "https://example.com",
        "https://chat.example.com",
        "https://a.b.example.com:444",
    ],
)
def test_origin_allowed_for_allowed_hosts_with_ports_and_wildcards(origin):
    assert origin_allowed(origin, HOSTS, []) is True


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.com",
        "https://example.com.evil.com",
        "https://notexample.com",
        "http://127.0.0.2:8000",
        "null",
        "ws://localhost",
        "file://localhost",
        "localhost",
        "",
    ],
)
def test_origin_refused_for_other_hosts_null_and_non_http(origin):
    assert origin_allowed(origin, HOSTS, []) is False


def test_origin_exact_host_does_not_match_subdomain():
    assert origin_allowed("http://sub.localhost", ["localhost"], []) is False


def test_origin_allowed_by_explicit_extra_origin():
    extra = ["https://app.other.org"]
    assert origin_allowed("https://app.other.org", ["localhost"], extra) is True
    assert origin_allowed("https://evil.other.org", ["localhost"], extra) is False


def test_origin_null_allowed_only_when_listed_explicitly():
    assert origin_allowed("null", ["*"], []) is False
    assert origin_allowed("null", [], ["null"]) is True


def test_origin_star_allows_everything():
    assert origin_allowed("https://anything.test", [], ["*"]) is True
    assert origin_allowed("null", [], ["*"]) is True


def test_origin_allowed_hosts_star_allows_any_http_origin():
    assert origin_allowed("https://anything.test:9", ["*"], []) is True


# --- rejection_headers --------------------------------------------------------------


def test_rejection_headers_keeps_view_headers_and_cookies_and_sets_length():
    response = HttpResponse("nope", status=500)
    response["X-Reason"] = "denied"
    response.set_cookie("a", "1")
    response.set_cookie("b", "2", path="/x")
    pairs = rejection_headers(response.items(), response.cookies.values(), len(response.content))
    assert (b"X-Reason", b"denied") in pairs
    assert (b"Content-Type", b"text/html; charset=utf-8") in pairs
    cookies = [value for name, value in pairs if name == b"Set-Cookie"]
    assert len(cookies) == 2
    assert cookies[0].startswith(b"a=1")
    assert cookies[1].startswith(b"b=2") and b"Path=/x" in cookies[1]
    assert [value for name, value in pairs if name.lower() == b"content-length"] == [b"4"]
    assert [value for name, value in pairs if name.lower() == b"connection"] == [b"close"]


def test_rejection_headers_replaces_view_content_length_and_connection():
    items = [("Content-Length", "999"), ("connection", "keep-alive"), ("X-A", "1")]
    pairs = rejection_headers(items, [], 7)
    assert pairs == [(b"X-A", b"1"), (b"Content-Length", b"7"), (b"Connection", b"close")]


# --- properties of origin_allowed and check_close -------------------------------

LABELS = ["example", "com", "chat", "a", "Evil", "localhost", "127", "0", "1", "xn--bcher-kva"]
hostnames = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(".".join)
host_patterns = st.lists(
    st.one_of(hostnames, hostnames.map(lambda host: "." + host), st.just("*")), max_size=4, unique=True
)
ports = st.one_of(st.none(), st.integers(min_value=1, max_value=65535))


def _host_matches(host, patterns):
    """What ALLOWED_HOSTS means, written out: exact names, ".domain" for it and its subdomains, "*"."""
    host = host.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith(".") and (host == pattern[1:] or host.endswith(pattern)):
            return True
    return False


@given(st.sampled_from(["http", "https", "HTTP", "Https"]), hostnames, ports, host_patterns)
def test_property_http_origins_are_allowed_exactly_when_their_host_matches_allowed_hosts(scheme, host, port, patterns):
    origin = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    assert origin_allowed(origin, patterns, []) is _host_matches(host, patterns)


@given(st.text(max_size=60), host_patterns, st.lists(st.text(max_size=30), max_size=3))
def test_property_arbitrary_origins_never_raise_and_are_allowed_only_by_a_listed_host_or_origin(
    origin, patterns, extra
):
    extra = [value for value in extra if value != "*"]
    allowed = origin_allowed(origin, patterns, extra)
    if allowed and origin not in extra:
        parsed = urlsplit(origin)
        assert parsed.scheme.lower() in ("http", "https")
        assert parsed.hostname and _host_matches(parsed.hostname, patterns)


@given(
    st.one_of(
        st.just("null"),
        st.text(max_size=40),
        st.builds(
            lambda scheme, rest: f"{scheme}://{rest}",
            st.sampled_from(["ws", "wss", "file", "ftp", "data", "javascript", "chrome-extension", "x"]),
            st.text(max_size=30),
        ),
    ),
    st.lists(st.sampled_from(["*", "localhost", ".example.com", "127.0.0.1"]), max_size=4),
)
def test_property_null_and_non_http_origins_are_refused_unless_star_is_configured(origin, patterns):
    scheme = origin.partition("://")[0].lower() if "://" in origin else ""
    if scheme in ("http", "https"):
        return
    assert origin_allowed(origin, patterns, []) is False
    assert origin_allowed(origin, patterns, ["http://allowed.example"]) is False
    assert origin_allowed(origin, patterns, ["*"]) is True


@given(st.text(max_size=60), host_patterns)
def test_property_star_in_allowed_origins_allows_every_origin(origin, patterns):
    assert origin_allowed(origin, patterns, ["*"]) is True


@given(st.text(alphabet="[]:@/%.-a1", max_size=20).map(lambda rest: "http://" + rest))
def test_property_malformed_http_origins_are_answered_without_raising(origin):
    # An Origin header is client input: a value urlsplit cannot parse ("http://[") is refused,
    # not an exception in the upgrade (uvicorn answers that with a 500).
    allowed = origin_allowed(origin, ["localhost", "127.0.0.1", "[::1]"], [])
    assert allowed in (True, False)
    if allowed:
        assert urlsplit(origin).hostname in ("localhost", "127.0.0.1", "::1")


@given(st.integers(min_value=-70000, max_value=70000), st.one_of(st.none(), st.text(max_size=130)))
def test_property_check_close_accepts_exactly_sendable_codes_and_reasons_that_fit(code, reason):
    fits = reason is None or len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
    if is_sendable_close_code(code) and fits:
        out_code, out_reason = check_close(code, reason)
        assert out_code == code and out_reason == (reason or "")
        assert len(out_reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
        assert 1000 <= out_code <= 4999 and out_code not in (1004, 1005, 1006, 1010, 1015)
    else:
        with pytest.raises(ValueError, match=r"^(code|message)"):
            check_close(code, reason)


@pytest.mark.parametrize("char", ["\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"])
def test_check_header_and_cookie_reject_other_control_characters(char):
    with pytest.raises(ValueError, match="control character"):
        check_header("X-A", f"a{char}b")
    with pytest.raises(ValueError, match="control character"):
        check_cookie(f"a=b{char}")


def test_check_header_accepts_a_tab_in_the_value():
    assert check_header("X-A", "a\tb") == ("X-A", "a\tb")


@pytest.mark.parametrize(("status", "phrase"), [(408, b"Request Timeout"), (431, b"Request Header Fields Too Large")])
def test_head_refusal_is_a_complete_response_that_closes(status, phrase):
    raw = head_refusal(status)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 %d %s" % (status, phrase)
    assert b"Connection: close" in lines
    assert b"Content-Length: %d" % len(body) in lines
    assert body == phrase + b".\n"


# --- the hosts Django accepts --------------------------------------------------------


def test_debug_with_empty_allowed_hosts_accepts_what_django_accepts():
    hosts = django_allowed_hosts([], debug=True)
    for origin in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://app.localhost"):
        assert origin_allowed(origin, hosts, []), origin
    assert not origin_allowed("http://evil.example:8000", hosts, [])


def test_empty_allowed_hosts_without_debug_accepts_nothing():
    assert django_allowed_hosts([], debug=False) == []
    assert not origin_allowed("http://127.0.0.1:8000", django_allowed_hosts([], debug=False), [])


def test_configured_allowed_hosts_are_used_as_they_are():
    assert django_allowed_hosts(["example.com"], debug=True) == ["example.com"]
