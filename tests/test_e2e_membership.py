"""Every process is a member of the cluster from its start: a server killed -9 is reaped by
a ``runworker wsgroups`` or a ``wsbroadcast`` that never received a message, with every
disconnect handler run exactly once within ``PROCESS_TIMEOUT`` + a heartbeat."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from .conftest import ROOT, Server, start_server
from .wsclient import first_text_frame, raw_handshake

pytestmark = pytest.mark.e2e

#: tests/settings.py: PROCESS_TIMEOUT 4 s, HEARTBEAT_INTERVAL 1 s.
PROCESS_TIMEOUT, HEARTBEAT = 4.0, 1.0
SLACK = 5.0  # a loaded machine


def _own_cluster(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A database of their own: no other test's process reaps here."""
    env = dict(base_env)
    if "SQLITE_PATH" in env:
        env["SQLITE_PATH"] = str(tmp_path / "members.sqlite3")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
    return env


def _start_wsbroadcast(env: dict[str, str], tmp_path: Path) -> Server:
    log_path, events_path = tmp_path / "wsbroadcast.log", tmp_path / "wsbroadcast.events"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "wsbroadcast", "--interval", "0.5", "--no-progress"],
            cwd=ROOT,
            env={**env, "WSGROUPS_TEST_EVENTS": str(events_path)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server("wsbroadcast", 0, proc, log_path, events_path)


def _live_processes(env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "manage.py", "wsstatus", "--json"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [p for p in json.loads(done.stdout)["processes"] if p["live"]]


def _wait_until_member(env: dict[str, str], member: Server, kind: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert member.process.poll() is None, member.log()
        if any(p["pid"] == member.process.pid and p["kind"] == kind for p in _live_processes(env)):
            return
        time.sleep(0.3)
    raise AssertionError(f"{member.kind} did not join the cluster within {timeout}s:\n{member.log()}")


@pytest.mark.parametrize("members", ["runworker", "wsbroadcast", "runworker+wsbroadcast"])
def test_a_crashed_server_is_reaped_by_processes_that_never_got_a_message(base_env, tmp_path, members: str) -> None:  # type: ignore[no-untyped-def]
    env = _own_cluster(base_env, tmp_path)
    survivors: list[Server] = []
    victim: Server | None = None
    try:
        for kind in members.split("+"):
            if kind == "runworker":
                survivors.append(start_server("runworker", env, tmp_path))
                _wait_until_member(env, survivors[-1], "worker")
            else:
                survivors.append(_start_wsbroadcast(env, tmp_path))
                _wait_until_member(env, survivors[-1], "broadcaster")
        victim = start_server("daphne", env, tmp_path)

        async def open_sockets() -> list[int]:
            ids = []
            for _ in range(20):
                ws = await connect(f"{victim.url}/ws/echo", max_size=None)
                ids.append(int(json.loads(await ws.recv())["id"]))
            return ids

        ids = asyncio.run(open_sockets())
        time.sleep(0.5)  # the registry rows are written before each 101; let the batch settle

        def reaped() -> list[int]:
            return [r["id"] for s in survivors for r in s.events("disconnect")]

        os.killpg(victim.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while set(reaped()) < set(ids) and time.monotonic() - killed_at < PROCESS_TIMEOUT + HEARTBEAT + 20:
            time.sleep(0.05)
        elapsed = time.monotonic() - killed_at
        logs = "\n".join(s.log() for s in survivors)
        assert set(reaped()) >= set(ids), f"not reaped after {elapsed:.1f}s:\n{logs}"
        assert elapsed < PROCESS_TIMEOUT + HEARTBEAT + SLACK, f"reaping took {elapsed:.1f}s"
        time.sleep(2 * HEARTBEAT + 0.5)  # later reaping rounds must not run them again
        events = reaped()
        assert [events.count(socket_id) for socket_id in ids] == [1] * len(ids)
        assert all(s.process.poll() is None for s in survivors), logs
    finally:
        for server in [*survivors, *([victim] if victim else [])]:
            server.stop(signal.SIGKILL, timeout=5)


def test_sockets_a_shutdown_could_not_close_in_time_are_reaped_by_a_peer_once(base_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM to a server whose clients do not answer its 1001 within SHUTDOWN_TIMEOUT: their
    disconnect handlers run once, in the process that reaps it (not never, not twice)."""
    env = _own_cluster(base_env, tmp_path)
    peer = start_server("daphne", env, tmp_path)
    victim = start_server("daphne", env, tmp_path, extra_env={"WSGROUPS_TEST_SHUTDOWN_TIMEOUT": "0.1"})
    silent = []
    try:
        _wait_until_member(env, peer, "server")
        # Raw clients that never answer the 1001: their close handshakes end only when the server
        # gives up on them (autobahn, under daphne, after 1 s), long after SHUTDOWN_TIMEOUT.
        for _ in range(5):
            response = raw_handshake(victim.port, "/ws/echo")
            assert response.status_line.startswith("HTTP/1.1 101"), response.status_line
            silent.append((response, int(json.loads(first_text_frame(response))["id"])))
        ids = [socket_id for _, socket_id in silent]
        time.sleep(0.5)  # the registry batch settles
        os.killpg(victim.process.pid, signal.SIGTERM)
        victim.process.wait(30)
        stopped_at = time.monotonic()

        def runs() -> list[int]:
            return [r["id"] for s in (peer, victim) for r in s.events("disconnect")]

        while not set(runs()) >= set(ids) and time.monotonic() - stopped_at < PROCESS_TIMEOUT + HEARTBEAT + 20:
            time.sleep(0.1)
        assert set(runs()) >= set(ids), f"handlers never ran:\n{victim.log()}\n{peer.log()}"
        time.sleep(2 * HEARTBEAT + 0.5)  # later reaping rounds must not run them again
        assert [runs().count(socket_id) for socket_id in ids] == [1] * len(ids)
        # Sockets still closing at SHUTDOWN_TIMEOUT are handed to the peer; on a loaded machine
        # the server may finish closing them first (then it runs their handlers itself).
        handed_off = {r["id"] for r in peer.events("disconnect")}
        assert bool(handed_off) == ("left to the process that reaps this one" in victim.log())
    finally:
        for response, _ in silent:
            response.close()
        for server in (peer, victim):
            server.stop(signal.SIGKILL, timeout=5)
