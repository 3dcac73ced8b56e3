"""Frames to handlers and close codes as the client sees them, against daphne and uvicorn."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import async_timeout
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .conftest import Server

pytestmark = pytest.mark.e2e


async def _closed(ws: ClientConnection, timeout: float = 10) -> tuple[int, str, list[object]]:
    """Read until the server closes; return close code, reason and the frames before it."""
    frames: list[object] = []
    async with async_timeout.timeout(timeout):
        try:
            while True:
                frames.append(await ws.recv())
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the server dropped the connection without a close frame"
            return exc.rcvd.code, exc.rcvd.reason, frames


async def _open(server: Server, group: str = "echo") -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/{group}", max_size=None)
    hello = json.loads(await ws.recv())
    return ws, int(hello["id"])


def _disconnects(server: Server, socket_id: int, timeout: float = 10) -> int:
    rows = server.wait_for_events(
        lambda rows: any(r["event"] == "disconnect" and r["id"] == socket_id for r in rows), timeout
    )
    time.sleep(0.3)  # a second, wrong call would land here
    rows = server.events("disconnect")
    return sum(1 for row in rows if row["id"] == socket_id)


def test_text_and_binary_go_to_their_handlers(server: Server) -> None:
    async def scenario() -> list[object]:
        ws, _ = await _open(server)
        async with ws:
            await ws.send("text in")
            await ws.send(b"bytes in")
            return [await ws.recv(), await ws.recv()]

    assert asyncio.run(scenario()) == ["text in", b"bytes in"]


def test_current_is_the_socket_whose_handler_runs(server: Server) -> None:
    async def scenario() -> dict[str, int]:
        ws, _ = await _open(server)
        async with ws:
            await ws.send("current")
            return dict(json.loads(await ws.recv()))

    reply = asyncio.run(scenario())
    assert reply["current"] == reply["id"]


def test_text_to_a_binary_only_group_closes_1003_naming_the_missing_handler(server: Server) -> None:
    async def scenario() -> tuple[int, str, int]:
        ws, socket_id = await _open(server, "binary-only")
        await ws.send(b"fine")
        assert await ws.recv() == b"fine"
        await ws.send("not fine")
        code, reason, _ = await _closed(ws)
        return code, reason, socket_id

    code, reason, socket_id = asyncio.run(scenario())
    assert code == 1003
    assert reason == "group 'binary-only' has no text handler"
    assert _disconnects(server, socket_id) == 1


def test_handler_exception_closes_1011_and_runs_the_disconnect_handler_once(server: Server) -> None:
    async def scenario() -> tuple[int, int]:
        ws, socket_id = await _open(server)
        await ws.send("boom")
        code, _, _ = await _closed(ws)
        return code, socket_id

    code, socket_id = asyncio.run(scenario())
    assert code == 1011
    assert _disconnects(server, socket_id) == 1
    assert "handler failure requested by the test" in server.log()


@pytest.mark.parametrize(
    ("code", "reason"), [(1008, "policy says no"), (1001, "going"), (1013, "later"), (4000, "app")]
)
def test_disconnect_sends_code_and_reason(server: Server, code: int, reason: str) -> None:
    async def scenario() -> tuple[int, str, int]:
        ws, socket_id = await _open(server)
        await ws.send(f"close:{code}:{reason}")
        got_code, got_reason, _ = await _closed(ws)
        return got_code, got_reason, socket_id

    got_code, got_reason, socket_id = asyncio.run(scenario())
    assert (got_code, got_reason) == (code, reason)
    assert _disconnects(server, socket_id) == 1


def test_disconnect_after_send_and_immediately(server: Server) -> None:
    async def scenario(command: str) -> tuple[int, list[object]]:
        ws, _ = await _open(server)
        await ws.send(command)
        code, _, frames = await _closed(ws)
        return code, frames

    assert asyncio.run(scenario("send-then-close")) == (1000, ["last words"])
    assert asyncio.run(scenario("close-now")) == (1000, [])


def test_invalid_utf8_text_closes_1007(server: Server) -> None:
    async def scenario() -> tuple[int, int]:
        ws, socket_id = await _open(server)
        await ws.send(b"\xff\xfe\xfd", text=True)
        code, _, _ = await _closed(ws)
        return code, socket_id

    code, socket_id = asyncio.run(scenario())
    assert code == 1007
    assert _disconnects(server, socket_id) == 1


def test_message_over_the_size_limit_closes_1009(server: Server) -> None:
    async def scenario() -> tuple[int, str]:
        ws, _ = await _open(server)
        await ws.send("x" * (64 * 1024 + 1))
        code, reason, _ = await _closed(ws)
        return code, reason

    code, reason = asyncio.run(scenario())
    assert code == 1009
    assert "limit of 65536" in reason  # wsgroups', or the server's once the frame header announced it


def test_message_at_the_size_limit_is_accepted(server: Server) -> None:
    async def scenario() -> object:
        ws, _ = await _open(server)
        async with ws:
            await ws.send("y" * (64 * 1024))
            return await ws.recv()

    assert asyncio.run(scenario()) == "y" * (64 * 1024)


def test_handler_calls_keep_arrival_order(server: Server) -> None:
    async def scenario() -> list[object]:
        ws, _ = await _open(server, "slow")
        async with ws:
            for i in range(100):
                await ws.send(f"m{i}")
            return [await ws.recv() for _ in range(100)]

    assert asyncio.run(scenario()) == [f"m{i}" for i in range(100)]


def test_a_blocking_handler_does_not_stop_other_sockets(server: Server) -> None:
    async def scenario() -> float:
        blocked, _ = await _open(server)
        other, _ = await _open(server)
        async with blocked, other:
            await blocked.send("sleep:4")
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await other.send("still served")
            assert await other.recv() == "still served"
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_group_broadcast_and_disconnect_from_a_view(server: Server) -> None:
    async def scenario() -> tuple[dict[str, int], list[object], list[tuple[int, str]]]:
        sockets = [await _open(server, "room-a") for _ in range(3)]
        outsider, _ = await _open(server, "echo")
        result = json.loads(
            await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"{server.http}/broadcast/room-a?text=hi+all", timeout=10).read()
            )
        )
        got = [await ws.recv() for ws, _ in sockets]
        await asyncio.to_thread(lambda: urllib.request.urlopen(f"{server.http}/disconnect/room-a", timeout=10).read())
        closes = [(code, reason) for code, reason, _ in [await _closed(ws) for ws, _ in sockets]]
        await outsider.send("ping")
        assert await outsider.recv() == "ping"
        await outsider.close()
        return result, got, closes

    result, got, closes = asyncio.run(scenario())
    assert result == {"sent": 3, "members": 3}
    assert got == ["hi all"] * 3
    assert closes == [(4001, "bye all")] * 3


def test_a_burst_larger_than_the_outgoing_buffer_reaches_a_client_that_keeps_reading(server: Server) -> None:
    # The buffer (OUTGOING_BUFFER, 1000 here) bounds what waits for a slow client; a client
    # that reads gets every frame (test_e2e_cluster covers one that stops reading).
    async def scenario() -> list[object]:
        ws, _ = await _open(server)
        async with ws:
            await ws.send("flood")
            return [await asyncio.wait_for(ws.recv(), 10) for _ in range(5000)]

    assert asyncio.run(scenario()) == [f"flood {i}" for i in range(5000)]


def test_empty_text_and_binary_messages_go_both_ways(server: Server) -> None:
    async def scenario() -> list[object]:
        ws, _ = await _open(server)
        async with ws:
            await ws.send("")
            await ws.send(b"")
            return [await ws.recv(), await ws.recv()]

    assert asyncio.run(scenario()) == ["", b""]
