"""The contract under the other servers: hypercorn, ``uvicorn --workers 2`` and gunicorn
with uvicorn's worker class, over TCP, each on a database of its own.

Each server kind is started once for the module (with keep-alive pings every second,
where its command line can set them) and runs the same checks as daphne and uvicorn do in
``test_e2e_upgrade.py``, ``test_e2e_lifecycle.py`` and ``test_e2e_cluster.py``: the 101's
cookies and headers, refusals, close codes and reasons both ways, the disconnect handler
once, sends by ID from another process and group broadcasts. The multi-worker servers
also show that every worker joins the cluster at startup, that a send by ID reaches a
socket whichever worker holds it, and that a worker killed with SIGKILL has its sockets
reaped by the others. Each server's last test stops it with SIGTERM: 1001 for every
client, each disconnect handler once. granian must refuse to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import MULTI_WORKER_KINDS, ROOT, WORKERS, Server, private_database, run_ctl, server_command, start_server
from .services import free_port
from .wsclient import close_of, raw_handshake, read_server_frame

pytestmark = pytest.mark.e2e

KINDS = ("hypercorn", *MULTI_WORKER_KINDS)
#: Keep-alive pings every second, where the server's command line sets them (gunicorn's
#: uvicorn worker takes uvicorn's defaults: a ping every 20 s).
PING_ARGS = {
    "hypercorn": ["--websocket-ping-interval", "1"],
    "uvicorn-workers": ["--ws-ping-interval", "1"],
    "gunicorn": [],
}
#: The reason phrase of a refusal whose view set "Nope Not Today": ASGI has no field for
#: it, so uvicorn sends the standard phrase and hypercorn (h11) none at all.
REFUSAL_REASON = {"hypercorn": "", "uvicorn-workers": "i'm a teapot", "gunicorn": "i'm a teapot"}


def server_pids(server: Server) -> set[int]:
    """The server's process and its children (hypercorn serves from a child process too)."""
    pid = server.process.pid
    return {pid, *(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())}


def wait_for_members(server: Server, env: dict[str, str], count: int, timeout: float = 60) -> set[int]:
    """Wait until ``count`` of the server's processes are live members of the cluster; their pids."""
    deadline = time.monotonic() + timeout
    while True:
        members = set(run_ctl(env, "live-pids", "server")) & server_pids(server)
        if len(members) >= count or time.monotonic() > deadline:
            return members
        time.sleep(0.3)


@pytest.fixture(scope="module", params=KINDS)
def other_server(
    request: pytest.FixtureRequest, base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, str]]]:
    """One server of the kind on a database of its own (whose processes are only its own), and its env."""
    kind = request.param
    workdir = tmp_path_factory.mktemp(kind)
    env = private_database(base_env, workdir / "db.sqlite3")
    server = start_server(kind, env, workdir, extra_args=PING_ARGS[kind])
    try:
        # Every worker joins the cluster at its lifespan startup, before any socket.
        expected = WORKERS if kind in MULTI_WORKER_KINDS else 1
        members = wait_for_members(server, env, expected)
        assert len(members) == expected, (members, server.log())
        server.extra["members"] = members
        yield server, env
    finally:
        server.stop(signal.SIGKILL, timeout=5)


async def _open(server: Server, group: str = "echo") -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/{group}", open_timeout=30)
    return ws, int(json.loads(await asyncio.wait_for(ws.recv(), 10))["id"])


def test_101_carries_each_cookie_and_header(other_server: tuple[Server, dict[str, str]]) -> None:
    server, _ = other_server
    response = raw_handshake(server.port, "/wstest")
    try:
        assert response.status == 101, response.status_line
        assert response.header("Set-Cookie") == ["MyCookie1=123", "MyCookie2=456"]
        assert response.header("MyHeader") == ["MyHeaderData"]
    finally:
        response.close()


def test_refusal_keeps_status_headers_cookies_and_body(other_server: tuple[Server, dict[str, str]]) -> None:
    server, _ = other_server
    response = raw_handshake(server.port, "/reject")
    try:
        assert response.status == 418
        assert response.body == b"you shall not pass"
        assert response.header("X-Why") == ["testing"]
        assert any(cookie.startswith("rejected=1") for cookie in response.header("Set-Cookie"))
        assert response.reason.lower() == REFUSAL_REASON[server.kind]
    finally:
        response.close()
    not_found = raw_handshake(server.port, "/no/such/path")
    try:
        assert not_found.status == 404
    finally:
        not_found.close()


def test_close_codes_and_reasons_both_ways_and_the_disconnect_handler_once(
    other_server: tuple[Server, dict[str, str]],
) -> None:
    server, env = other_server

    async def scenario() -> list[int]:
        by_server, server_closed = await _open(server)
        await by_server.send("hello")
        assert await asyncio.wait_for(by_server.recv(), 10) == "hello"
        await by_server.send("close:4001:the server says bye")
        assert await close_of(by_server) == (4001, "the server says bye")

        by_client, client_closed = await _open(server)
        await by_client.close(4000, "the client says bye")
        echoed = by_client.protocol.close_rcvd
        assert echoed is not None and (echoed.code, echoed.reason) == (4000, "the client says bye")

        by_id, closed_by_id = await _open(server)
        assert await asyncio.to_thread(run_ctl, env, "disconnect", str(closed_by_id), "moved", "--code", "4002")
        assert await close_of(by_id) == (4002, "moved")
        return [server_closed, client_closed, closed_by_id]

    ids = asyncio.run(scenario())
    rows = server.wait_for_events(lambda rows: {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids))
    time.sleep(1)  # a second call would come soon after the first
    counts = [sum(1 for r in server.events("disconnect") if r["id"] == socket_id) for socket_id in ids]
    assert counts == [1, 1, 1], rows
    registry = [run_ctl(env, "registry", str(socket_id)) for socket_id in ids]
    assert [(row["close_code"], row["close_reason"]) for row in registry] == [
        (4001, "the server says bye"),
        (4000, "the client says bye"),
        (4002, "moved"),
    ]


def test_sends_by_id_and_broadcasts_from_another_process_reach_every_worker(
    other_server: tuple[Server, dict[str, str]],
) -> None:
    """Sockets are opened until every worker holds one (the kernel hands connections to
    whichever worker accepts first), then reached by ID and by group from a separate process."""
    server, env = other_server
    workers = server.extra["members"]

    async def scenario() -> dict[int, int]:
        sockets: dict[int, ClientConnection] = {}
        holder: dict[int, int] = {}
        try:
            for _ in range(40):
                ws, socket_id = await _open(server, "room")
                sockets[socket_id] = ws
                holder[socket_id] = (await asyncio.to_thread(run_ctl, env, "process-of", str(socket_id)))["pid"]
                if set(holder.values()) == workers:
                    break
            assert set(holder.values()) == workers, f"40 sockets all went to {set(holder.values())} of {workers}"
            for socket_id, ws in sockets.items():
                assert await asyncio.to_thread(run_ctl, env, "send", str(socket_id), f"to {socket_id}") is True
                assert await asyncio.wait_for(ws.recv(), 10) == f"to {socket_id}"
            assert await asyncio.to_thread(run_ctl, env, "broadcast", "room", "to all") == len(sockets)
            for ws in sockets.values():
                assert await asyncio.wait_for(ws.recv(), 10) == "to all"
            assert sorted(await asyncio.to_thread(run_ctl, env, "sockets", "room")) == sorted(sockets)
            return holder
        finally:
            for ws in sockets.values():
                await ws.close()

    holder = asyncio.run(scenario())
    assert set(holder.values()) == workers


@pytest.mark.parametrize("other_server", [kind for kind in KINDS if PING_ARGS[kind]], indirect=True)
def test_the_server_pings_idle_sockets(other_server: tuple[Server, dict[str, str]]) -> None:
    server, _ = other_server
    response = raw_handshake(server.port, "/ws/echo")
    try:
        assert response.status == 101
        buffer = bytearray(response.body)
        opcodes = []
        deadline = time.monotonic() + 10
        while 0x9 not in opcodes and time.monotonic() < deadline:
            opcodes.append(read_server_frame(response.sock, timeout=10, buffer=buffer).opcode)
        assert 0x9 in opcodes, opcodes
    finally:
        response.close()


@pytest.mark.parametrize("other_server", MULTI_WORKER_KINDS, indirect=True)
def test_a_worker_killed_with_sigkill_has_its_sockets_reaped_once(
    other_server: tuple[Server, dict[str, str]],
) -> None:
    server, env = other_server
    workers = server.extra["members"]

    async def scenario() -> tuple[list[int], int]:
        sockets: dict[int, tuple[ClientConnection, int]] = {}
        for _ in range(40):
            ws, socket_id = await _open(server)
            pid = (await asyncio.to_thread(run_ctl, env, "process-of", str(socket_id)))["pid"]
            sockets[socket_id] = (ws, pid)
            if {pid for _, pid in sockets.values()} == workers:
                break
        victim = next(iter(sockets.values()))[1]
        doomed = [socket_id for socket_id, (_, pid) in sockets.items() if pid == victim]
        keeper_id = next(socket_id for socket_id, (_, pid) in sockets.items() if pid != victim)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        rows = await asyncio.to_thread(
            server.wait_for_events,
            lambda rows: {r["id"] for r in rows if r["event"] == "disconnect"} >= set(doomed),
            20,
        )
        assert {r["id"] for r in rows if r["event"] == "disconnect"} >= set(doomed), server.log()
        assert time.monotonic() - killed_at < 15
        await asyncio.sleep(2.5)  # another reaping round must not run them again
        for socket_id in doomed:
            assert await asyncio.to_thread(run_ctl, env, "is-dead", str(socket_id)) is True
        keeper = sockets[keeper_id][0]
        assert await asyncio.to_thread(run_ctl, env, "send", str(keeper_id), "still here") is True
        assert await asyncio.wait_for(keeper.recv(), 10) == "still here"
        for ws, _ in sockets.values():
            await ws.close()
        return doomed, victim

    doomed, victim = asyncio.run(scenario())
    disconnects = server.events("disconnect")
    assert [sum(1 for r in disconnects if r["id"] == socket_id) for socket_id in doomed] == [1] * len(doomed)
    assert all(r["pid"] != victim for r in disconnects if r["id"] in doomed)
    # The supervisor starts a new worker in its place, which joins the cluster.
    assert len(wait_for_members(server, env, WORKERS)) == WORKERS, server.log()


def test_sigterm_closes_every_socket_with_1001_and_runs_each_disconnect_handler_once(
    other_server: tuple[Server, dict[str, str]],
) -> None:
    """The server's last test: SIGTERM to its process group, as a service manager stops it."""
    server, env = other_server

    async def scenario() -> list[tuple[int, int | None]]:
        opened = [await _open(server) for _ in range(4)]

        async def closed(ws: ClientConnection, socket_id: int) -> tuple[int, int | None]:
            code, _ = await close_of(ws, 20)
            return socket_id, code

        waiters = [asyncio.create_task(closed(ws, socket_id)) for ws, socket_id in opened]
        await asyncio.sleep(0.2)
        os.killpg(server.process.pid, signal.SIGTERM)
        return list(await asyncio.gather(*waiters))

    results = asyncio.run(scenario())
    assert [code for _, code in results] == [1001] * len(results), server.log()
    server.process.wait(30)
    ids = [socket_id for socket_id, _ in results]
    server.wait_for_events(lambda rows: {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids), 5)
    disconnects = server.events("disconnect")
    assert [sum(1 for r in disconnects if r["id"] == socket_id) for socket_id in ids] == [1] * len(ids)
    assert run_ctl(env, "live-pids", "server") == []  # every worker recorded itself as stopped


def test_granian_refuses_to_start_and_says_why(base_env: dict[str, str]) -> None:
    """granian's 101 drops the accept's headers: its worker cannot load the application, and
    granian exits (it listens before its worker loads the application, so the port tells nothing)."""
    command = server_command("granian", free_port(), [])
    granian = subprocess.Popen(
        command, cwd=ROOT, env=base_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        log = granian.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(granian.pid, signal.SIGKILL)
        log = granian.communicate(timeout=10)[0].decode(errors="replace")
        raise AssertionError(f"granian kept serving for 60 s:\n{log}") from None
    assert granian.returncode == 1, log
    assert "django.core.exceptions.ImproperlyConfigured: wsgroups cannot run under granian" in log, log
    assert "headers of websocket.accept" in log
