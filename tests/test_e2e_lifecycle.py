"""How sockets end, and that nothing ends them unasked: against real server processes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import urllib.request
from collections.abc import Callable

import async_timeout
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .conftest import Server, run_ctl
from .wsclient import client_frame, first_text_frame, raw_handshake, read_close

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., Server]


async def _open(server: Server, group: str = "echo") -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/{group}")
    return ws, int(json.loads(await ws.recv())["id"])


def _count(server: Server, ids: list[int], timeout: float = 10) -> dict[int, int]:
    server.wait_for_events(lambda rows: {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids), timeout)
    time.sleep(0.3)
    rows = server.events("disconnect")
    return {socket_id: sum(1 for r in rows if r["id"] == socket_id) for socket_id in ids}


def test_client_close_runs_the_disconnect_handler_once(server: Server) -> None:
    async def scenario() -> int:
        ws, socket_id = await _open(server)
        await ws.close(1000, "client done")
        return socket_id

    socket_id = asyncio.run(scenario())
    assert _count(server, [socket_id]) == {socket_id: 1}


def test_dropped_tcp_connection_runs_the_disconnect_handler_once(server: Server) -> None:
    response = raw_handshake(server.port, "/ws/echo")
    assert response.status == 101
    socket_id = int(json.loads(first_text_frame(response))["id"])
    response.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    response.sock.close()  # RST, no close frame
    assert _count(server, [socket_id]) == {socket_id: 1}


def test_server_side_disconnect_and_a_late_client_close_run_the_handler_once(server: Server) -> None:
    async def scenario() -> int:
        ws, socket_id = await _open(server)
        await ws.send("close:1000:done")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return socket_id

    socket_id = asyncio.run(scenario())
    assert _count(server, [socket_id]) == {socket_id: 1}


@pytest.mark.parametrize("kind", ["daphne", "uvicorn", "runserver"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_closes_every_socket_with_1001_and_runs_disconnect_handlers(
    server_factory: ServerFactory, kind: str, sig: int
) -> None:
    server = server_factory(kind)

    async def scenario() -> list[tuple[int, int | None]]:
        opened = [await _open(server, group) for group in ("echo", "echo", "slow")]

        async def closed(ws: ClientConnection, socket_id: int) -> tuple[int, int | None]:
            try:
                async with async_timeout.timeout(15):
                    while True:
                        await ws.recv()
            except ConnectionClosed as exc:
                return socket_id, exc.rcvd.code if exc.rcvd else None
            raise AssertionError("unreachable")

        waiters = [asyncio.create_task(closed(ws, socket_id)) for ws, socket_id in opened]
        await asyncio.sleep(0.2)
        import os

        os.killpg(server.process.pid, sig)
        return list(await asyncio.gather(*waiters))

    results = asyncio.run(scenario())
    assert [code for _, code in results] == [1001, 1001, 1001]
    server.process.wait(20)
    assert server.process.returncode is not None
    counts = _count(server, [socket_id for socket_id, _ in results], timeout=1)
    assert counts == {socket_id: 1 for socket_id, _ in results}


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_sends_by_id_that_reached_the_layer_before_sigterm_are_delivered_before_the_1001(
    server_factory: ServerFactory, kind: str, base_env: dict[str, str]
) -> None:
    """Another process sends by ID to an open socket and signals its server the moment its
    sends are in the channel layer, most of them not yet read: every one reaches the client,
    in order, ahead of the 1001."""
    server = server_factory(kind)
    count = 20_000

    async def scenario() -> tuple[list[str], int | None]:
        ws, socket_id = await _open(server)
        command = ["send", str(socket_id), "m{i}", f"--count={count}", f"--then-signal={server.process.pid}"]
        sender = asyncio.create_task(asyncio.to_thread(run_ctl, base_env, *command))
        received: list[str] = []
        code = None
        try:
            async with async_timeout.timeout(60):
                while True:
                    received.append(str(await ws.recv()))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
        assert await sender is True
        return received, code

    received, code = asyncio.run(scenario())
    assert code == 1001
    assert len(received) == count, f"{count - len(received)} of {count} messages lost"
    assert received == [f"m{i}" for i in range(count)]
    server.process.wait(20)


def test_idle_sockets_stay_open_and_still_receive(server: Server) -> None:
    async def scenario() -> list[object]:
        sockets = [await _open(server, "idle") for _ in range(20)]
        await asyncio.sleep(35)
        reply = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"{server.http}/broadcast/idle?text=still+here", timeout=10).read()
        )
        assert json.loads(reply)["sent"] == 20
        got = [await asyncio.wait_for(ws.recv(), 10) for ws, _ in sockets]
        for ws, _ in sockets:
            await ws.close()
        return got

    assert asyncio.run(scenario()) == ["still here"] * 20


def test_daphne_has_no_maximum_socket_lifetime(server_factory: ServerFactory) -> None:
    server = server_factory("daphne", extra_args=["--websocket_timeout", "2"])

    async def scenario() -> object:
        ws, _ = await _open(server)
        async with ws:
            await asyncio.sleep(6)
            await ws.send("alive")
            return await ws.recv()

    assert asyncio.run(scenario()) == "alive"


def test_keepalive_ping_drops_a_peer_that_never_answers(server_factory: ServerFactory) -> None:
    server = server_factory("daphne", extra_env={"WSGROUPS_TEST_PING_INTERVAL": "1", "WSGROUPS_TEST_PING_TIMEOUT": "1"})
    response = raw_handshake(server.port, "/ws/echo")
    assert response.status == 101
    socket_id = int(json.loads(first_text_frame(response))["id"])
    # Never read again, never answer pings: the server must give up on us.
    assert _count(server, [socket_id], timeout=15) == {socket_id: 1}
    response.close()


def test_keepalive_ping_is_answered_and_keeps_the_socket(server_factory: ServerFactory) -> None:
    server = server_factory("daphne", extra_env={"WSGROUPS_TEST_PING_INTERVAL": "1", "WSGROUPS_TEST_PING_TIMEOUT": "2"})

    async def scenario() -> object:
        ws, _ = await _open(server)
        async with ws:
            await asyncio.sleep(5)  # the client library answers the pings
            await ws.send("alive")
            return await ws.recv()

    assert asyncio.run(scenario()) == "alive"


def test_fragmented_text_message_reaches_the_handler_whole(server: Server) -> None:
    response = raw_handshake(server.port, "/ws/echo")
    sock = response.sock
    sock.sendall(client_frame(0x1, b"hel", fin=False) + client_frame(0x0, b"lo", fin=True))
    data = response.body
    deadline = time.monotonic() + 10

    def frames(buf: bytes) -> list[bytes]:
        out, i = [], 0
        while i + 2 <= len(buf) and i + 2 + buf[i + 1] <= len(buf):
            out.append(buf[i + 2 : i + 2 + buf[i + 1]])
            i += 2 + buf[i + 1]
        return out

    while len(frames(data)) < 2 and time.monotonic() < deadline:
        data += sock.recv(4096)
    response.close()
    assert frames(data)[1] == b"hello"


def test_a_burst_of_disconnects_leaves_no_stale_group_members(server: Server) -> None:
    async def scenario() -> dict[str, int]:
        sockets = [await connect(f"{server.url}/ws/burst") for _ in range(300)]
        for ws in sockets:
            await ws.recv()
        members = json.loads(
            await asyncio.to_thread(lambda: urllib.request.urlopen(f"{server.http}/broadcast/burst", timeout=10).read())
        )
        assert members["members"] == 300
        for ws in sockets:
            ws.transport.abort()  # all at once, no close handshake
        deadline = time.monotonic() + 10
        while True:
            reply = json.loads(
                await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"{server.http}/broadcast/burst", timeout=10).read()
                )
            )
            # The view broadcasts, then counts members: a socket can go in between.
            if (reply["members"] == 0 and reply["sent"] == 0) or time.monotonic() > deadline:
                return dict(reply)
            await asyncio.sleep(0.1)

    assert asyncio.run(scenario()) == {"sent": 0, "members": 0}
    assert "MaxConnectionsError" not in server.log()


def test_the_client_close_code_is_echoed_and_a_close_without_code_is_1005(server: Server, base_env) -> None:  # type: ignore[no-untyped-def]
    async def custom_close() -> tuple[int | None, str | None, int]:
        ws = await connect(f"{server.url}/ws/echo")
        socket_id = int(json.loads(await ws.recv())["id"])
        await ws.close(4000, "custom")
        echoed = ws.protocol.close_rcvd
        return (echoed.code if echoed else None), (echoed.reason if echoed else None), socket_id

    code, reason, custom_id = asyncio.run(custom_close())
    assert (code, reason) == (4000, "custom"), "the server must answer a close with the client's own code"

    bare = raw_handshake(server.port, "/ws/echo")
    assert bare.status == 101
    bare_id = int(json.loads(first_text_frame(bare))["id"])
    bare.sock.sendall(client_frame(0x8, b""))  # a close frame with no code, as ws.close() sends
    assert read_close(bare.sock).code == 1005  # answered with no code either
    bare.close()

    deadline = time.monotonic() + 10
    while True:
        rows = [run_ctl(base_env, "registry", str(i)) for i in (custom_id, bare_id)]
        if all(row and row["state"] == "closed" for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(row["close_code"], row["close_reason"]) for row in rows] == [(4000, "custom"), (1005, "")]
