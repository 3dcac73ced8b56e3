"""Connection, group, rate and handshake limits, on real daphne and uvicorn processes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import async_timeout
import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import ROOT, SERVER_KINDS, Server, run_ctl
from .wsclient import RawResponse, close_of, handshake_request, raw_handshake, send_raw_request, websocket_headers

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., Server]


def _limited(server_factory: ServerFactory, kind: str, **limits: str) -> Server:
    return server_factory(kind, extra_env={f"WSGROUPS_TEST_{name.upper()}": value for name, value in limits.items()})


async def _open(server: Server, group: str = "echo", **kwargs: object) -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/{group}", **kwargs)  # type: ignore[arg-type]
    return ws, int(json.loads(await ws.recv())["id"])


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_connections_beyond_the_process_limit_are_refused_with_503(server_factory: ServerFactory, kind: str) -> None:
    server = _limited(server_factory, kind, max_connections="3")

    async def scenario() -> tuple[int, str, str]:
        sockets = [(await _open(server))[0] for _ in range(3)]
        refused = await asyncio.to_thread(raw_handshake, server.port, "/ws/echo")
        refused.close()
        await sockets.pop().close()
        await asyncio.sleep(0.5)
        again, _ = await _open(server)  # a closed socket frees its place
        await again.send("still serving")
        echoed = str(await again.recv())
        for ws in [*sockets, again]:
            await ws.close()
        return refused.status, refused.body.decode(), echoed

    status, body, echoed = asyncio.run(scenario())
    assert status == 503
    assert "limit of 3 connections" in body
    assert echoed == "still serving"
    assert "refused with 503: server is at its limit of 3 connections" in server.log()
    assert "without completing handshake" not in server.log()  # no error line per refusal
    assert "Exception inside application" not in server.log()
    if kind == "daphne":
        assert '"WSREJECT /ws/echo"' in server.log()  # daphne's access log has the refusal


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_connections_beyond_the_per_client_limit_are_refused_for_that_address_only(
    server_factory: ServerFactory, kind: str
) -> None:
    server = _limited(server_factory, kind, max_connections_per_client="2")

    async def scenario() -> tuple[RawResponse, RawResponse]:
        first = [(await _open(server))[0] for _ in range(2)]
        own = await asyncio.to_thread(raw_handshake, server.port, "/ws/echo", source="127.0.0.1")
        other = await asyncio.to_thread(raw_handshake, server.port, "/ws/echo", source="127.0.0.2")
        for response in (own, other):
            response.close()
        for ws in first:
            await ws.close()
        return own, other

    own, other = asyncio.run(scenario())
    assert own.status == 503
    assert b"client address is at its limit of 2 connections" in own.body
    assert other.status == 101


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_socket_beyond_the_group_limit_is_closed_with_1013_and_its_handler_runs(
    server_factory: ServerFactory, kind: str
) -> None:
    server = _limited(server_factory, kind, max_connections_per_group="2")

    async def scenario() -> tuple[int, str, set[int], str]:
        members = [await _open(server, "room") for _ in range(2)]
        # The view's greeting is not sent: the socket is closing when the view sends it.
        extra = await connect(f"{server.url}/ws/room")
        code, reason = await close_of(extra)
        other, _ = await _open(server, "echo")  # other groups are not affected
        await other.send("other group")
        echoed = str(await other.recv())
        await other.close()
        member_ids = {socket_id for _, socket_id in members}
        for ws, _ in members:
            await ws.close()
        return code, reason, member_ids, echoed

    code, reason, member_ids, echoed = asyncio.run(scenario())
    assert code == 1013
    assert reason == "group 'room' is at its limit of 2 connections"
    assert echoed == "other group"

    def room_disconnects(rows: list[dict[str, object]]) -> list[object]:
        return [r["id"] for r in rows if r["event"] == "disconnect" and r.get("group") == "room"]

    server.wait_for_events(lambda rows: len(room_disconnects(rows)) >= 3)
    time.sleep(0.3)  # a second, wrong call would land here
    gone = room_disconnects(server.events())
    assert sorted(gone) == sorted(set(gone)), "a disconnect handler ran twice"
    assert len(gone) == 3 and member_ids < set(gone)


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_client_sending_faster_than_the_message_rate_is_closed_with_1008(
    server_factory: ServerFactory, base_env: dict[str, str], kind: str
) -> None:
    server = _limited(server_factory, kind, message_rate="5", message_burst="10")

    async def scenario() -> tuple[list[str], int, str, int, list[str]]:
        paced, _ = await _open(server)
        replies = []
        for i in range(12):  # 12 messages over 3 s: within 5/s with a burst of 10
            await paced.send(f"paced {i}")
            replies.append(str(await paced.recv()))
            await asyncio.sleep(0.25)
        flooder, flooder_id = await _open(server)
        for i in range(40):
            await flooder.send(f"flood {i}")
        echoed: list[str] = []
        try:
            async with async_timeout.timeout(10):
                while True:
                    echoed.append(str(await flooder.recv()))
        except Exception:
            pass
        code, reason = await close_of(flooder)
        await paced.close()
        return replies, code, reason, flooder_id, echoed

    replies, code, reason, flooder_id, echoed = asyncio.run(scenario())
    assert replies == [f"paced {i}" for i in range(12)]
    assert code == 1008
    assert reason == "rate limit: more than 5 messages per second"
    # The burst went through in order; nothing after the limit reached a handler.
    assert echoed == [f"flood {i}" for i in range(len(echoed))]
    assert 10 <= len(echoed) < 40
    rows = server.wait_for_events(lambda rows: any(r.get("id") == flooder_id for r in rows))
    assert sum(1 for r in rows if r["event"] == "disconnect" and r["id"] == flooder_id) == 1
    assert f"WebSocket {flooder_id} closed with 1008" in server.log()
    # Counted, and reported with the process's heartbeat (manage.py wsstatus, the admin).
    assert _limit_events_of(server, base_env).get("rate_limited") == 1


def _limit_events_of(server: Server, env: dict[str, str], timeout: float = 15) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [sys.executable, "manage.py", "wsstatus", "--json"], cwd=ROOT, env=env, capture_output=True, timeout=60
        )
        status = json.loads(done.stdout)
        events = next((p["limit_events"] for p in status["processes"] if p["pid"] == server.process.pid), {})
        if events or time.monotonic() > deadline:
            return dict(events)
        time.sleep(0.5)


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_view_deciding_past_the_handshake_timeout_is_refused_with_503(
    server_factory: ServerFactory, base_env: dict[str, str], kind: str
) -> None:
    server = _limited(server_factory, kind, handshake_timeout="1.5")
    rows_before = run_ctl(base_env, "registry-path", "/slow-upgrade")
    started = time.monotonic()
    response = raw_handshake(server.port, "/slow-upgrade?seconds=3", timeout=15)
    elapsed = time.monotonic() - started
    response.close()
    assert response.status == 503
    assert response.body == b"The upgrade took too long."
    assert 1.4 <= elapsed < 3
    # The view's late send_upgrade() raised instead of opening a socket nobody waits for.
    rows = server.wait_for_events(lambda rows: any(r["event"] == "late_upgrade_refused" for r in rows))
    assert any("HANDSHAKE_TIMEOUT" in r["error"] for r in rows if r["event"] == "late_upgrade_refused")
    assert run_ctl(base_env, "registry-path", "/slow-upgrade") == rows_before
    fast = raw_handshake(server.port, "/slow-upgrade?seconds=0")
    fast.close()
    assert fast.status == 101


def _trickle(port: int, pause: float, limit: float) -> tuple[float, bytes]:
    """Send an upgrade request head a byte every ``pause`` s; when and how the server ended it."""
    head = f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: {'a' * 200}\r\n".encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.setblocking(False)
        answer = b""
        for byte in head:
            if time.monotonic() - started > limit:
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            deadline = time.monotonic() + pause
            closed = False
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    time.sleep(0.02)
                    continue
                except OSError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                answer += chunk
            if closed:
                break
        return time.monotonic() - started, answer


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_request_head_sent_a_byte_at_a_time_is_cut_off_with_408(server_factory: ServerFactory, kind: str) -> None:
    server = _limited(server_factory, kind, handshake_timeout="2")

    async def scenario() -> tuple[tuple[float, bytes], tuple[float, bytes], str]:
        slow = asyncio.to_thread(_trickle, server.port, 0.2, 15)
        silent = asyncio.to_thread(_trickle, server.port, 15, 15)  # one byte, then nothing
        ws, _ = await _open(server)  # the server keeps serving meanwhile
        await ws.send("meanwhile")
        echoed = str(await ws.recv())
        results = await asyncio.gather(slow, silent)
        await ws.close()
        return results[0], results[1], echoed

    (slow_after, slow_answer), (silent_after, silent_answer), echoed = asyncio.run(scenario())
    assert echoed == "meanwhile"
    for after, answer in ((slow_after, slow_answer), (silent_after, silent_answer)):
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert 1.8 <= after < 6


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_an_oversized_request_head_is_refused_without_upgrading(server_factory: ServerFactory, kind: str) -> None:
    server = server_factory(kind)
    request = handshake_request(server.port, "/ws/echo", websocket_headers(extra=[("X-Big", "b" * 40000)]))
    response = send_raw_request(server.port, request)  # None: refused and reset before it was read
    if response is not None:
        response.close()
    status_line = response.status_line if response is not None else ""
    # Twisted refuses heads over 16 KiB with 400; uvicorn's adapter those over 32 KiB with
    # 431. Either may reset the connection before the client reads the answer.
    expected = "HTTP/1.1 400 " if kind == "daphne" else "HTTP/1.1 431 "
    assert status_line == "" or status_line.startswith(expected), status_line
    assert server.process.poll() is None
    fine = raw_handshake(server.port, "/ws/echo", {"X-Fine": "f" * 8000})
    fine.close()
    assert fine.status == 101
