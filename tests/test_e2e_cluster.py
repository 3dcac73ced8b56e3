"""Sockets addressed from other processes: two servers and separate sender processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import Cluster, Server
from .wsclient import close_of

pytestmark = pytest.mark.e2e


async def _open(server: Server, group: str = "echo") -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/{group}", max_size=None)
    return ws, int(json.loads(await ws.recv())["id"])


async def _ctl(cluster: Cluster, *args: str) -> object:
    return await asyncio.to_thread(cluster.ctl, *args)


def test_send_disconnect_and_is_dead_by_id_from_another_process(cluster: Cluster) -> None:
    first, second = cluster.servers

    async def scenario() -> None:
        a, a_id = await _open(first)
        b, b_id = await _open(second)
        assert await _ctl(cluster, "send", str(a_id), "to a") is True
        assert await _ctl(cluster, "send", str(b_id), "to b") is True
        assert await asyncio.wait_for(a.recv(), 10) == "to a"
        assert await asyncio.wait_for(b.recv(), 10) == "to b"
        assert await _ctl(cluster, "is-dead", str(a_id)) is False
        assert await _ctl(cluster, "disconnect", str(b_id), "moved away", "--code", "4002") is True
        assert await close_of(b) == (4002, "moved away")
        await a.close()
        deadline = time.monotonic() + 10
        while await _ctl(cluster, "is-dead", str(a_id)) is not True:
            assert time.monotonic() < deadline, "is_dead() stayed False after the client closed"
        assert await _ctl(cluster, "is-dead", str(b_id)) is True
        assert await _ctl(cluster, "send", str(a_id), "too late") is True or True

    asyncio.run(scenario())


def test_ids_from_unknown_blocks_are_dead_everywhere(cluster: Cluster) -> None:
    assert cluster.ctl("is-dead", str((123456 << 22) | 1)) is True
    assert cluster.ctl("send", str((123456 << 22) | 1), "nobody") is False


def test_group_broadcast_with_exclusion_and_sockets_across_processes(cluster: Cluster) -> None:
    first, second = cluster.servers

    async def scenario() -> None:
        opened = [await _open(server, "room") for server in (first, first, second, second)]
        ids = [socket_id for _, socket_id in opened]
        assert await _ctl(cluster, "sockets", "room") == sorted(ids)
        excluded = ids[0]
        assert await _ctl(cluster, "broadcast", "room", "hello room", "--exclude", str(excluded)) == 3
        for ws, socket_id in opened[1:]:
            assert await asyncio.wait_for(ws.recv(), 10) == "hello room", socket_id
        await opened[0][0].send("ping")
        assert await asyncio.wait_for(opened[0][0].recv(), 10) == "ping"  # nothing else was queued before it
        assert await _ctl(cluster, "group-disconnect", "room", "closing time", "--code", "4003") == 4
        for ws, _ in opened:
            assert await close_of(ws) == (4003, "closing time")
        assert await _ctl(cluster, "sockets", "room") == []

    asyncio.run(scenario())


def test_sends_from_one_sender_arrive_in_order(cluster: Cluster) -> None:
    async def scenario() -> list[object]:
        ws, socket_id = await _open(cluster.servers[1], "room")
        async with ws:
            sender = asyncio.create_task(_ctl(cluster, "send", str(socket_id), "n{i}", "--count", "1000"))
            got = [await asyncio.wait_for(ws.recv(), 20) for _ in range(1000)]
            assert await sender is True
            return got

    assert asyncio.run(scenario()) == [f"n{i}" for i in range(1000)]


def test_kill_9_of_a_server_reaps_its_sockets_once_within_the_bound(cluster: Cluster) -> None:
    victim, survivor = cluster.servers

    async def scenario() -> list[int]:
        doomed = [await _open(victim) for _ in range(3)]
        keeper, keeper_id = await _open(survivor)
        os.killpg(victim.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        ids = [socket_id for _, socket_id in doomed]
        rows = await asyncio.to_thread(
            survivor.wait_for_events,
            lambda rows: {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids),
            15,
        )
        elapsed = time.monotonic() - killed_at
        assert {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids), "disconnect handlers did not run"
        assert elapsed < 10, f"reaping took {elapsed:.1f}s"
        await asyncio.sleep(2.5)  # another reaping round must not run them again
        for socket_id in ids:
            assert await _ctl(cluster, "is-dead", str(socket_id)) is True
        await keeper.send("still here")
        assert await asyncio.wait_for(keeper.recv(), 10) == "still here"
        assert await _ctl(cluster, "is-dead", str(keeper_id)) is False
        await keeper.close()
        return ids

    ids = asyncio.run(scenario())
    counts = [sum(1 for r in survivor.events("disconnect") if r["id"] == socket_id) for socket_id in ids]
    assert counts == [1, 1, 1]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_a_client_that_stops_reading_is_closed_1013_with_bounded_memory(server_factory, base_env, kind: str) -> None:  # type: ignore[no-untyped-def]
    from .conftest import run_ctl
    from .wsclient import first_text_frame, raw_handshake

    server = server_factory(
        kind, extra_env={"WSGROUPS_TEST_OUTGOING_BUFFER": "1000", "WSGROUPS_TEST_CLOSE_TIMEOUT": "1"}
    )
    response = raw_handshake(server.port, "/ws/echo")
    assert response.status == 101
    response.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
    socket_id = int(json.loads(first_text_frame(response))["id"])
    rss_before = _rss_kib(server.process.pid)
    # 40 MB for a client that never reads again.
    assert run_ctl(base_env, "send", str(socket_id), "x", "--repeat", "2000", "--count", "20000", timeout=120) is True
    rows = server.wait_for_events(lambda rows: any(r["id"] == socket_id for r in rows), timeout=30)
    assert [r["id"] for r in rows if r["event"] == "disconnect"].count(socket_id) == 1
    grown_mib = (_rss_kib(server.process.pid) - rss_before) / 1024
    assert grown_mib < 20, f"server grew by {grown_mib:.0f} MiB for one stalled client"
    row = run_ctl(base_env, "registry", str(socket_id))
    assert row["close_code"] == 1013
    assert "outgoing buffer" in server.log()
    response.close()


def test_worker_mode_runs_handlers_in_workers_in_order(server_factory) -> None:  # type: ignore[no-untyped-def]
    workers = [server_factory("runworker") for _ in range(2)]
    server = server_factory("daphne", extra_env={"WSGROUPS_TEST_HANDLER_MODE": "worker"})
    worker_pids = {worker.process.pid for worker in workers}

    async def one(count: int) -> tuple[int, list[dict[str, object]]]:
        ws, socket_id = await _open(server, "where")
        async with ws:
            for i in range(count):
                await ws.send(f"m{i}")
            return socket_id, [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in range(count)]

    async def scenario() -> list[tuple[int, list[dict[str, object]]]]:
        return list(await asyncio.gather(*(one(150) for _ in range(4))))

    results = asyncio.run(scenario())
    pids = set()
    for _, replies in results:
        assert [reply["message"] for reply in replies] == [f"m{i}" for i in range(150)]
        pids |= {reply["pid"] for reply in replies}
    assert pids <= worker_pids and server.process.pid not in pids
    assert pids == worker_pids, "both workers should have taken handler calls"
    ids = [socket_id for socket_id, _ in results]
    deadline = time.monotonic() + 15
    while True:
        rows = [row for worker in workers for row in worker.events("disconnect")]
        if {row["id"] for row in rows} >= set(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(row["id"] for row in rows if row["id"] in ids) == sorted(ids)


def test_servers_survive_a_redis_restart_and_recover(base_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    from .conftest import run_ctl, start_server
    from .services import free_port, start_redis

    port = free_port()
    redis = start_redis(port)
    env = {**base_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    servers = [start_server(kind, env, tmp_path) for kind in ("daphne", "uvicorn")]

    def view(server: Server, path: str) -> dict[str, object]:
        return dict(json.loads(urllib.request.urlopen(f"{server.http}{path}", timeout=30).read()))

    async def scenario() -> None:
        a, a_id = await _open(servers[0])
        b, b_id = await _open(servers[1])
        assert view(servers[1], f"/send/{a_id}?text=before") == {"sent": True}
        assert await asyncio.wait_for(a.recv(), 10) == "before"

        redis.terminate()
        redis.wait(10)
        await asyncio.sleep(2)
        # Local sockets keep working while Redis is away ...
        for ws, text in ((a, "local a"), (b, "local b")):
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 10) == text
        # ... and a send to another process fails fast with a clear error instead of hanging.
        started = time.monotonic()
        outage = await asyncio.to_thread(view, servers[1], f"/send/{a_id}?text=lost")
        assert outage["error"] == "TransportError", outage
        assert time.monotonic() - started < 5
        failed = await asyncio.to_thread(run_ctl, env, "send", str(a_id), "x")
        assert failed["error"] == "TransportError", failed

        restarted = start_redis(port)
        try:
            back_at = time.monotonic()
            while True:
                answer = await asyncio.to_thread(view, servers[1], f"/send/{a_id}?text=after")
                if answer == {"sent": True}:
                    break
                assert time.monotonic() - back_at < 5, f"not recovered within 5s: {answer}"
                await asyncio.sleep(0.2)
            assert await asyncio.wait_for(a.recv(), 10) == "after"
            assert await asyncio.to_thread(run_ctl, env, "send", str(b_id), "from a new process") is True
            assert await asyncio.wait_for(b.recv(), 10) == "from a new process"
            await a.close()
            await b.close()
        finally:
            restarted.terminate()
            restarted.wait(10)

    try:
        asyncio.run(scenario())
        for server in servers:
            assert server.process.poll() is None, server.log()[-2000:]
            assert "MaxConnectionsError" not in server.log()
    finally:
        for server in servers:
            server.stop(signal.SIGKILL, timeout=5)
        if redis.poll() is None:
            redis.kill()


def test_wsstatus_reports_live_servers_sockets_and_message_rates(cluster: Cluster) -> None:
    import subprocess
    import sys

    from .conftest import ROOT

    async def scenario() -> dict[str, object]:
        ws, _ = await _open(cluster.servers[0], "room")
        async with ws:
            done_reading = asyncio.Event()

            async def chatter() -> None:
                # Until wsstatus has read the status: a slow start of its process must not
                # let the rates of the last heartbeat fall to zero.
                while not done_reading.is_set():
                    await ws.send("tick")
                    await ws.recv()
                    await asyncio.sleep(0.005)

            traffic = asyncio.create_task(chatter())
            await asyncio.sleep(2.5)  # at least one heartbeat interval of traffic
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "manage.py", "wsstatus", "--json"],
                cwd=ROOT,
                env=cluster.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            done_reading.set()
            await traffic
            assert done.returncode == 0, done.stderr
            return dict(json.loads(done.stdout))

    status = asyncio.run(scenario())
    servers = {p["pid"]: p for p in status["processes"] if p["live"]}  # type: ignore[attr-defined]
    busy = servers[cluster.servers[0].process.pid]
    assert busy["sockets"] >= 1 and busy["messages_in_per_s"] > 10 and busy["messages_out_per_s"] > 10
    assert status["groups"].get("room", 0) >= 1  # type: ignore[attr-defined]
    assert status["messages_in_per_s"] >= busy["messages_in_per_s"]


@pytest.mark.parametrize("victim_kind", ["daphne", "uvicorn"])
def test_an_idle_server_reaps_a_crashed_one(base_env, tmp_path, victim_kind: str) -> None:  # type: ignore[no-untyped-def]
    """Every server is a member of the cluster from its start: one that never served a
    socket still reaps a crashed peer and runs each disconnect handler exactly once."""
    import subprocess
    import sys

    from .conftest import ROOT, start_server

    env = dict(base_env)
    if "SQLITE_PATH" in env:  # a cluster of their own: no other test's server reaps here
        env["SQLITE_PATH"] = str(tmp_path / "idle.sqlite3")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
    survivor = start_server("uvicorn" if victim_kind == "daphne" else "daphne", env, tmp_path)
    victim = start_server(victim_kind, env, tmp_path)
    try:
        _reap_scenario(survivor, victim)
    finally:
        survivor.stop(signal.SIGKILL, timeout=5)
        victim.stop(signal.SIGKILL, timeout=5)


def _reap_scenario(survivor: Server, victim: Server) -> None:

    async def scenario() -> list[int]:
        doomed = [await _open(victim) for _ in range(20)]
        return [socket_id for _, socket_id in doomed]

    ids = asyncio.run(scenario())
    os.killpg(victim.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    rows = survivor.wait_for_events(lambda rows: {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids), 20)
    elapsed = time.monotonic() - killed_at
    assert {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids), survivor.log()
    assert elapsed < 4 + 1 + 4, f"reaping took {elapsed:.1f}s"  # PROCESS_TIMEOUT + a heartbeat + slack
    time.sleep(2.5)  # another reaping round must not run them again
    counts = [sum(1 for r in survivor.events("disconnect") if r["id"] == socket_id) for socket_id in ids]
    assert counts == [1] * len(ids)
