"""A Redis failover under Sentinel, as the README's "Redis" section sets it up.

A primary, a replica and one Sentinel (quorum 1) run on free loopback ports; a daphne
and a uvicorn server reach the layer through the Sentinel (``REDIS_SENTINELS``), each
holding sockets of its own group. A separate sender process keeps up steady traffic —
sends by ID to every socket and a broadcast to each group, 20 times a second each — and
records what every call reported; mid-way the test kills the primary with SIGKILL.

What must hold, and holds:

- the processes follow the promoted replica within Sentinel's failover timeout + 5 s
  (sends succeed again, each process logs the layer reachable again);
- no client socket is closed;
- every message reported as taken (``send()`` returned True, a broadcast counted the
  group's sockets) arrives at its socket exactly once; a send that raised
  TransportError, or a broadcast that counted 0, may be missing, never doubled;
- each process logs the outage once.

Two things outside wsgroups could still lose a message reported as taken, and this test
cannot make them happen: Redis replication is asynchronous (a write the primary took but
had not yet passed to the replica when it died is gone; wsgroups' send returns after the
EXPIRE that follows the message's ZADD, so here, on one host, the replica has it), and a
BZPOPMIN that the primary executed but whose answer never left it takes a message along.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from .conftest import ROOT, Server, start_server
from .services import _redis_binary, free_port, redis_answers, start_redis

pytestmark = pytest.mark.e2e

MASTER_NAME = "wsgroups-failover"
#: Not 1000: with down-after-milliseconds at or below Sentinel's 1 s ping period, a loaded
#: Sentinel may flag the *promoted* replica down for ~0.1 s right after the switch (its
#: fresh link's first PING goes out a full ping period later), which clients see as a
#: second, brief outage.
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 5000
#: How long after the kill the processes may take to send again: Sentinel's bound + 5 s.
RECOVERY_BOUND = FAILOVER_TIMEOUT_MS / 1000 + 5
SOCKETS_PER_SERVER = 20
TRAFFIC_SECONDS = 14.0
TICK_INTERVAL = 0.05
#: Ticks every socket must have received before the primary is killed.
WARMUP_TICKS = 20
UNREACHABLE = "wsgroups transport: the channel layer is unreachable"
REACHABLE = "wsgroups transport: the channel layer is reachable"
#: Logged when the layer delivered a batch twice, or a popped message could not be backed up.
COPY_DROPPED = "wsgroups transport: dropped a second copy"
KEPT = "delivering it anyway"


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


@dataclass
class SentinelSetup:
    """A primary, its replica and one Sentinel watching them, on loopback."""

    primary_port: int
    replica_port: int
    sentinel_port: int
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinel_log(self) -> Path:
        return self.workdir / "sentinel.log"

    def replica_in_sync(self) -> bool:
        try:
            info = _client(self.replica_port).info("replication")
        except redis.RedisError:
            return False
        return bool(info.get("master_link_status") == "up")

    def sentinel_sees_the_replica(self) -> bool:
        try:
            replicas = _client(self.sentinel_port).sentinel_slaves(MASTER_NAME)
        except redis.RedisError:
            return False
        return any(
            int(r["port"]) == self.replica_port
            and not r["is_sdown"]
            and not r["is_disconnected"]
            and r.get("master-link-status") == "ok"
            for r in replicas
        )

    def master_address(self) -> tuple[str, int]:
        host, port = _client(self.sentinel_port).sentinel_get_master_addr_by_name(MASTER_NAME)
        return str(host.decode() if isinstance(host, bytes) else host), int(port)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(free_port(), free_port(), free_port(), tmp_path)
    try:
        common = ("--dir", str(tmp_path), "--repl-diskless-sync-delay", "0")
        setup.processes["primary"] = start_redis(setup.primary_port, *common, log_path=tmp_path / "primary.log")
        setup.processes["replica"] = start_redis(
            setup.replica_port,
            *common,
            "--replicaof",
            "127.0.0.1",
            str(setup.primary_port),
            log_path=tmp_path / "replica.log",
        )
        _wait(setup.replica_in_sync, 20, "the replica to sync with the primary")
        # Sentinel rewrites its configuration file (its view of the cluster) as it goes.
        config = tmp_path / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {setup.sentinel_port}",
                    "bind 127.0.0.1",
                    f"dir {tmp_path}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {setup.primary_port} 1",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                    "",
                ]
            )
        )
        with open(setup.sentinel_log, "wb") as log:
            setup.processes["sentinel"] = subprocess.Popen(
                [_redis_binary(), str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        _wait(lambda: redis_answers("127.0.0.1", setup.sentinel_port), 10, "Sentinel to answer")
        _wait(setup.sentinel_sees_the_replica, 20, "Sentinel to see the replica")
        yield setup
    finally:
        setup.stop()


@pytest.fixture
def failover_env(base_env: dict[str, str], sentinel_setup: SentinelSetup, tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in base_env.items() if key != "REDIS_URL"}
    env["REDIS_SENTINELS"] = f"127.0.0.1:{sentinel_setup.sentinel_port}"
    env["REDIS_MASTER_NAME"] = MASTER_NAME
    if "SQLITE_PATH" in env:
        env["SQLITE_PATH"] = str(tmp_path / "failover.sqlite3")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
    return env


@dataclass
class Client:
    """One socket and every frame it got."""

    ws: ClientConnection
    id: int
    group: str
    frames: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for frame in self.ws:
            self.frames.append(str(frame))


async def _open(server: Server, group: str) -> Client:
    ws = await connect(f"{server.url}/ws/{group}", max_size=None)
    client = Client(ws, int(json.loads(await asyncio.wait_for(ws.recv(), 10))["id"]), group)
    client.reader = asyncio.create_task(client.read())
    return client


class LogWatch:
    """When each process logged each line of interest (polled: to ~50 ms, and lines logged
    before the first poll count as logged then)."""

    def __init__(self, logs: dict[str, Path], lines: tuple[str, ...]) -> None:
        self.logs, self.lines = logs, lines
        self.seen: dict[tuple[str, str], list[float]] = {}

    def poll(self) -> None:
        now = time.time()
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            for line in self.lines:
                times = self.seen.setdefault((name, line), [])
                times += [now] * (text.count(line) - len(times))

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.05)


def _sentinel_events(log: str) -> list[tuple[float, str]]:
    """Sentinel's ``+event`` lines with their wall-clock times."""
    events = []
    for match in re.finditer(r"(\d+ \w+ \d{4} [\d:]+\.\d{3}) [#*] ([+-][\w-]+.*)", log):
        stamp = time.mktime(time.strptime(match[1][:-4], "%d %b %Y %H:%M:%S")) + int(match[1][-3:]) / 1000
        events.append((stamp, match[2]))
    return events


def test_a_sentinel_failover_loses_no_message_that_was_taken(
    failover_env: dict[str, str], sentinel_setup: SentinelSetup, tmp_path: Path
) -> None:
    env = failover_env
    began = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(start_server, kind, env, tmp_path) for kind in ("daphne", "uvicorn")]
    servers = [future.result() for future in starting if future.exception() is None]
    if len(servers) < len(starting):
        for server in servers:
            server.stop(signal.SIGKILL)
        raise next(error for future in starting if (error := future.exception()) is not None)
    groups = {server.kind: f"failover-{server.kind}" for server in servers}
    sender_out, sender_err = tmp_path / "sender.out", tmp_path / "sender.err"
    watch = LogWatch(
        {**{server.kind: server.log_path for server in servers}, "sender": sender_err},
        (UNREACHABLE, REACHABLE, COPY_DROPPED, KEPT),
    )
    sender: subprocess.Popen[bytes] | None = None
    phases = {"servers up": time.monotonic() - began}

    async def scenario() -> tuple[list[Client], float]:
        nonlocal sender
        clients = [await _open(server, groups[server.kind]) for server in servers for _ in range(SOCKETS_PER_SERVER)]
        phases["sockets open"] = time.monotonic() - began
        watcher = asyncio.create_task(watch.run())
        with open(sender_out, "wb") as out, open(sender_err, "wb") as err:
            sender = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "wsctl",
                    "traffic",
                    ",".join(groups.values()),
                    ",".join(str(client.id) for client in clients),
                    "--seconds",
                    str(TRAFFIC_SECONDS),
                    "--interval",
                    str(TICK_INTERVAL),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        # Kill the primary once traffic flows to every socket.
        warm = f"d{WARMUP_TICKS}:"
        deadline = time.monotonic() + 30
        while not all(any(frame.startswith(warm) for frame in client.frames) for client in clients):
            assert sender.poll() is None, f"the sender stopped early:\n{sender_err.read_text()}"
            assert time.monotonic() < deadline, "traffic did not reach every socket within 30s"
            await asyncio.sleep(0.05)
        sentinel_setup.processes["primary"].kill()
        killed_at = time.time()
        phases["primary killed"] = time.monotonic() - began
        deadline = time.monotonic() + TRAFFIC_SECONDS + 20
        while sender.poll() is None:
            assert time.monotonic() < deadline, "the sender did not finish"
            await asyncio.sleep(0.1)
        assert sender.returncode == 0, sender_err.read_text()
        # Let the last messages arrive: every socket gets the last tick's send by ID.
        phases["sender done"] = time.monotonic() - began
        records = _records(sender_out)
        last = f"d{records['sends'][-1]['k']}:"
        deadline = time.monotonic() + 10
        while not all(any(frame.startswith(last) for frame in client.frames) for client in clients):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # stragglers (duplicates) would arrive by now
        watcher.cancel()
        watch.poll()
        phases["delivered"] = time.monotonic() - began
        closed = [client.id for client in clients if client.reader is None or client.reader.done()]
        for client in clients:
            await client.ws.close()
        assert not closed, f"client sockets {closed} were closed during the failover"
        return clients, killed_at

    try:
        clients, killed_at = asyncio.run(scenario())
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait(10)
        for server in servers:
            server.stop(signal.SIGTERM)
    phases["servers stopped"] = time.monotonic() - began

    records = _records(sender_out)
    sends, casts = records["sends"], records["broadcasts"]
    timeline = _timeline(records, killed_at, watch, sentinel_setup)
    print("\n" + timeline)
    print("  ".join(f"{phase} {seconds:.1f}s" for phase, seconds in phases.items()))

    # The promoted replica is the primary now.
    assert sentinel_setup.master_address() == ("127.0.0.1", sentinel_setup.replica_port), timeline

    # Sends by ID raised while the layer was away, and only then; they succeeded again
    # within the bound, and from then on every send and broadcast was taken.
    failed = [r for r in sends if "E" in r["d"]]
    assert failed, f"no send raised: the sender did not notice the outage\n{timeline}"
    assert failed[0]["done"] >= killed_at, f"sends raised before the kill\n{timeline}"
    resumed = next((r for r in sends if r["k"] > failed[-1]["k"]), None)
    assert resumed is not None, f"sends never succeeded again after the kill\n{timeline}"
    assert resumed["at"] - killed_at <= RECOVERY_BOUND, timeline
    assert sends[-1]["at"] - resumed["at"] >= 1, f"too little traffic after the failover\n{timeline}"
    counted = next((r for r in casts if r["at"] > killed_at and _all_counted(r)), None)
    assert counted is not None, f"no broadcast counted every socket after the kill\n{timeline}"
    assert counted["done"] - killed_at <= RECOVERY_BOUND, timeline
    settled = max(resumed["at"], counted["done"])
    late = [r["k"] for r in casts if r["at"] > settled and not _all_counted(r)]
    assert not late, f"broadcasts {late} were not counted in full after the failover\n{timeline}"

    # Every message reported as taken arrived at its socket once; nothing arrived twice.
    problems = _deliveries(records, clients)
    assert not problems, "\n".join([*problems[:20], f"({len(problems)} problems)", timeline])

    # The outage is logged once per process, and its end too, within the bound.
    for name, path in watch.logs.items():
        log = path.read_text(errors="replace")
        assert log.count(UNREACHABLE) == 1, f"{name} logged the outage {log.count(UNREACHABLE)} times:\n{log[-3000:]}"
        back = [at for at in watch.seen.get((name, REACHABLE), []) if at > killed_at]
        assert back, f"{name} never logged the layer as reachable again\n{timeline}"
        assert back[0] - killed_at <= RECOVERY_BOUND, f"{name} was back {back[0] - killed_at:.1f}s after the kill"


def _records(path: Path) -> dict[str, list[dict[str, Any]]]:
    lines = path.read_text().strip().splitlines()
    assert lines, "the sender printed nothing"
    records: dict[str, list[dict[str, Any]]] = json.loads(lines[-1])["result"]
    return records


def _all_counted(record: dict[str, Any]) -> bool:
    return all(count == SOCKETS_PER_SERVER for count in record["b"])


def _deliveries(records: dict[str, list[dict[str, Any]]], clients: list[Client]) -> list[str]:
    """Every message reported as taken arrived at its socket; nothing arrived twice."""
    groups = list(dict.fromkeys(client.group for client in clients))
    problems = []
    for index, client in enumerate(clients):
        got = Counter(client.frames)
        expected = set()
        for record in records["sends"]:
            outcome = record["d"][index]
            if outcome == "T":
                expected.add(f"d{record['k']}:{client.id}")
            elif outcome == "F":
                problems.append(f"send to live socket {client.id} returned False (tick {record['k']})")
        for record in records["broadcasts"]:
            count = record["b"][groups.index(client.group)]
            text = f"b{record['k']}:{client.group}"
            if count == SOCKETS_PER_SERVER:
                expected.add(text)
            elif count not in (0, "E"):
                problems.append(f"broadcast {text} counted {count} of {SOCKETS_PER_SERVER}")
        for text in sorted(expected - set(got)):
            problems.append(f"socket {client.id} never got {text!r}, reported as taken")
        for text, count in got.items():
            if count > 1:
                problems.append(f"socket {client.id} got {text!r} {count} times")
    return problems


def _timeline(records: dict[str, list[dict[str, Any]]], killed_at: float, watch: LogWatch, setup: SentinelSetup) -> str:
    """What happened around the kill, in seconds relative to it."""
    sends, casts = records["sends"], records["broadcasts"]
    events = [(killed_at, "test: kill -9 of the primary")]
    events += [(at, f"sentinel: {what}") for at, what in _sentinel_events(setup.sentinel_log.read_text())]
    events += [(at, f"{name}: {line.split(': ', 1)[-1]}") for (name, line), times in watch.seen.items() for at in times]
    failed = [r for r in sends if "E" in r["d"]]
    if failed:
        events.append((failed[0]["at"], f"sender: first send that raised (tick {failed[0]['k']})"))
        events.append(
            (failed[-1]["at"], f"sender: last send that raised (tick {failed[-1]['k']}, {len(failed)} ticks)")
        )
        resumed = next((r for r in sends if r["k"] > failed[-1]["k"]), None)
        if resumed:
            events.append((resumed["at"], f"sender: sends taken again (tick {resumed['k']})"))
    waiting = next((r for r in casts if r["at"] < killed_at < r["done"]), None)
    if waiting:
        events.append((waiting["done"], f"sender: the broadcast begun before the kill returned {waiting['b']}"))
    zero = [r for r in casts if r["at"] > killed_at and not _all_counted(r)]
    if zero:
        events.append((zero[0]["at"], f"sender: first broadcast not counted in full {zero[0]['b']}"))
    counted = next((r for r in casts if r["at"] > killed_at and _all_counted(r)), None)
    if counted:
        events.append((counted["done"], f"sender: first broadcast begun after the kill counted in full {counted['b']}"))
    events.append((sends[-1]["at"], f"sender: last tick ({sends[-1]['k']})"))
    relevant = sorted(((at, what) for at, what in events if at >= killed_at - 1), key=lambda event: event[0])
    return "\n".join(f"{at - killed_at:+7.3f}s  {what}" for at, what in relevant)
