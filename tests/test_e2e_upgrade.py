"""The upgrade inside a view, over TCP against real daphne and uvicorn processes."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import Server
from .wsclient import raw_handshake

pytestmark = pytest.mark.e2e


def test_wstest_101_carries_each_cookie_and_header_on_the_wire(server: Server) -> None:
    response = raw_handshake(server.port, "/wstest")
    try:
        assert response.status == 101
        assert response.header("Set-Cookie") == ["MyCookie1=123", "MyCookie2=456"]
        assert response.header("MyHeader") == ["MyHeaderData"]
        assert response.header("Sec-WebSocket-Accept")
    finally:
        response.close()


def test_wstest_greets_pushes_and_echoes(server: Server) -> None:
    async def scenario() -> list[object]:
        async with connect(f"{server.url}/wstest") as ws:
            got: list[object] = [await ws.recv(), await ws.recv()]
            await ws.send("hello")
            got.append(await ws.recv())
            await ws.send(b"\x00\x01binary")
            got.append(await ws.recv())
            return got

    assert asyncio.run(scenario()) == [
        "Hello WebSocket!",
        "Hello again WebSocket!",
        "Here is the server push!",
        b"\x00\x01binary",
    ]


def test_wstest_plain_get_is_refused_with_the_views_500(server: Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server.http}/wstest", timeout=10)
    assert caught.value.code == 500
    assert caught.value.read() == b"WebSocket upgrade on /wstest was not approved."


def test_wstest_refused_upgrade_keeps_status_body_and_reason_phrase(server: Server) -> None:
    # /wstest approves upgrades, so use a view that answers an upgrade with a response.
    response = raw_handshake(server.port, "/reject")
    try:
        assert response.status == 418
        assert response.body == b"you shall not pass"
        assert response.header("X-Why") == ["testing"]
        assert any(cookie.startswith("rejected=1") for cookie in response.header("Set-Cookie"))
        expected_reason = "Nope Not Today" if server.kind == "daphne" else "I'm a Teapot"
        assert response.reason.lower() == expected_reason.lower()
    finally:
        response.close()


def test_unknown_path_is_refused_with_the_urlconfs_404(server: Server) -> None:
    response = raw_handshake(server.port, "/no/such/path")
    try:
        assert response.status == 404
        assert b"Not Found" in response.body
    finally:
        response.close()


def test_id_is_known_before_upgrading_and_group_is_kept(server: Server) -> None:
    async def scenario() -> dict[str, object]:
        async with connect(f"{server.url}/ws/echo") as ws:
            return dict(json.loads(await ws.recv()))

    hello = asyncio.run(scenario())
    assert hello["id"] == hello["expected_id"]
    assert isinstance(hello["id"], int) and 0 < hello["id"] < 2**53
    assert hello["group"] == "echo"


def test_ids_are_unique(server: Server) -> None:
    async def one() -> int:
        async with connect(f"{server.url}/ws/echo") as ws:
            return int(json.loads(await ws.recv())["id"])

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(20))))

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 20


def test_subprotocol_chosen_by_the_view(server: Server) -> None:
    async def scenario() -> str | None:
        async with connect(f"{server.url}/ws/echo?subprotocol=chat.v2", subprotocols=["chat.v1", "chat.v2"]) as ws:
            await ws.recv()
            return ws.subprotocol

    assert asyncio.run(scenario()) == "chat.v2"


def test_subprotocol_not_offered_is_a_500_before_upgrading(server: Server) -> None:
    response = raw_handshake(server.port, "/ws/echo?subprotocol=other", {"Sec-WebSocket-Protocol": "chat.v1"})
    try:
        assert response.status == 500
    finally:
        response.close()


def test_send_upgrade_twice_raises_upgrade_error(server: Server) -> None:
    async def scenario() -> object:
        async with connect(f"{server.url}/twice") as ws:
            return await ws.recv()

    message = asyncio.run(scenario())
    assert isinstance(message, str) and message.startswith("error: send_upgrade() was already called")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Upgrade", "h2c"),
        ("Sec-WebSocket-Accept", "forged"),
        ("Content-Length", "0"),
        ("X-Ok", "a\r\nX-Evil: 1"),
        ("X-Name", "caf\xe9"),  # daphne would send it as UTF-8, uvicorn as ISO-8859-1
    ],
)
def test_reserved_or_injected_headers_fail_before_anything_is_sent(server: Server, name: str, value: str) -> None:
    from urllib.parse import urlencode

    response = raw_handshake(server.port, "/bad-header?" + urlencode({"name": name, "value": value}))
    try:
        assert response.status == 500
        assert not response.header("X-Evil")
    finally:
        response.close()
    assert "ValueError" in server.log()


def test_handled_without_upgrade_is_a_500(server: Server) -> None:
    response = raw_handshake(server.port, "/handled-without-upgrade")
    try:
        assert response.status == 500
        assert b"HANDLED without upgrading" in response.body
    finally:
        response.close()


def test_login_required_applies_to_the_upgrade_view(server: Server) -> None:
    response = raw_handshake(server.port, "/private")
    try:
        assert response.status == 302
        assert response.header("Location") == ["/accounts/login/?next=/private"]
    finally:
        response.close()


def test_cross_origin_upgrade_is_refused_with_403(server: Server) -> None:
    async def scenario(origin: str) -> int:
        try:
            async with connect(f"{server.url}/ws/echo", origin=origin) as ws:  # type: ignore[arg-type]
                await ws.recv()
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(scenario("http://evil.example")) == 403
    assert asyncio.run(scenario("http://allowed.example")) == 101
    assert asyncio.run(scenario(f"http://127.0.0.1:{server.port}")) == 101


def test_session_is_attached_and_active_websocket_finds_the_socket(server: Server) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{server.http}/set-session?name=alice", timeout=10).read()
    cookie = next(iter(jar))

    async def scenario() -> tuple[int, dict[str, object]]:
        headers = {"Cookie": f"{cookie.name}={cookie.value}"}
        async with connect(f"{server.url}/ws/echo?session=1", additional_headers=headers) as ws:
            socket_id = int(json.loads(await ws.recv())["id"])
            await ws.send("session")
            reply = json.loads(await ws.recv())
            active = json.loads(
                await asyncio.to_thread(lambda: opener.open(f"{server.http}/session-socket", timeout=10).read())
            )
            assert active["id"] == socket_id
            return socket_id, reply

    _, reply = asyncio.run(scenario())
    assert reply == {"name": "alice"}
    # Once the socket is gone the session has no active WebSocket.
    deadline = time.monotonic() + 5
    while json.loads(opener.open(f"{server.http}/session-socket", timeout=10).read())["id"] is not None:
        assert time.monotonic() < deadline, "active_websocket still returns the closed socket"
        time.sleep(0.05)


def test_new_session_gets_its_cookie_on_the_101(server: Server) -> None:
    response = raw_handshake(server.port, "/ws/echo?session=1")
    try:
        assert response.status == 101
        assert any(cookie.startswith("sessionid=") for cookie in response.header("Set-Cookie"))
    finally:
        response.close()


def test_handled_returned_to_a_plain_http_request_is_a_500(server: Server) -> None:
    # Its 101 would leave an HTTP client waiting for a protocol switch that never comes.
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server.http}/handled-without-upgrade", timeout=10)
    assert caught.value.code == 500
    assert b"not a WebSocket upgrade" in caught.value.read()
