"""What the scenarios of :mod:`bench.scenarios` and :mod:`bench.soak` share.

The run's :class:`Options` and :class:`Context`, the :class:`Record` each figure becomes,
the paths of the two targets on a benchmark server, fresh server processes over a clean
Redis (:func:`fresh_servers`), waits on the Redis sets where servers store their sockets'
addresses, and the separate sending process (:func:`run_sender`, :mod:`bench.sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

from bench.registry import BARE_KEY, WSGROUPS_KEY, shard_clients, sync_client
from bench.servers import BENCH_APPLICATION, LOOPBACK, STOCK_APPLICATION, ManagedProcess, ProcessGroup, run_command

__all__ = [
    "ID_KEYS",
    "PATHS",
    "PLAIN_PATHS",
    "Context",
    "Options",
    "Record",
    "fresh_servers",
    "mib",
    "run_sender",
    "spread",
    "wait_registered",
    "wait_registered_empty",
    "ws_url",
]

PATHS = {"wsgroups": "/bench/ws", "bare": "/bare/ws"}
#: What each target's servers run: the baseline's never load wsgroups' ASGI application, so
#: they serve it as a stock Channels project would (no wsgroups server adapter installed).
APPLICATIONS = {"wsgroups": BENCH_APPLICATION, "bare": STOCK_APPLICATION}
#: For scenarios that address no socket from outside: nothing is stored on either side.
PLAIN_PATHS = {target: f"{path}?store=0" for target, path in PATHS.items()}
#: The Redis set where each target's servers store the addresses of their sockets.
ID_KEYS = {"wsgroups": WSGROUPS_KEY, "bare": BARE_KEY}


@dataclass
class Record:
    """One figure: ``value`` None means not measured, with ``status`` saying why."""

    scenario: str
    target: str
    metric: str
    value: float | None
    status: str = "ok"
    note: str = ""


@dataclass
class Options:
    """Sizes and limits of a run (the command-line options of ``python -m bench``)."""

    server: str = "daphne"
    concurrency: int = 50
    echo_connections: int = 50
    echo_messages: int = 200
    size: int = 100
    broadcast_sockets: int = 5000
    broadcast_messages: int = 10
    ids_sockets: int = 5000
    ids_messages: int = 10
    tick_sockets: int = 20000
    tick_servers: int = 2
    ticks: int = 3
    churn_connections: int = 2000
    churn_concurrency: int = 50
    memory_sockets: int = 5000
    room_sockets: int = 5000
    room_servers: int = 2
    room_messages: int = 10
    room_rounds: int = 3
    room_churn_sockets: int = 2000
    room_churn_rounds: int = 5
    probe_sockets: int = 5
    probe_timeout: float = 5.0
    timeout: float = 300.0
    idle: float = 5.0
    soak_duration: float = 600.0
    soak_sample: float = 10.0
    soak_warmup: float = 60.0
    soak_margin: float = 120.0
    soak_servers: int = 2
    soak_sockets: int = 1000
    soak_churn_per_minute: float = 300.0
    soak_churn_life: float = 5.0
    soak_drain: float = 3.0
    soak_broadcast_interval: float = 0.25
    soak_ids_interval: float = 1.0
    storm_sockets: int = 10000
    storm_duration: float = 60.0
    storm_ids_interval: float = 1.0


@dataclass
class Context:
    """What every scenario needs: options, the process group and the helper processes' env."""

    options: Options
    processes: ProcessGroup
    env: dict[str, str]
    notes: list[str] = field(default_factory=list)
    #: Time series of long scenarios (the soak's samples), written to the results file.
    samples: list[dict[str, object]] = field(default_factory=list)
    #: How many Redis servers the channel layer is sharded over (``--shards``).
    shards: int = 1


def mib(kib: float) -> float:
    """KiB (what ``ManagedProcess.rss_kib`` reports) in MiB."""
    return kib / 1024


def spread(count: int, parts: int) -> list[int]:
    """``count`` split round-robin over ``parts``: the first ``count % parts`` get one more."""
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def _reset_redis() -> None:
    """Forget the previous run's socket sets and channel-layer keys (on every shard)."""
    for redis in shard_clients():
        for pattern in ("bench:*", "asgi*"):
            keys = list(redis.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 1000):
                redis.delete(*keys[start : start + 1000])


@contextlib.asynccontextmanager
async def fresh_servers(ctx: Context, target: str, count: int = 1) -> AsyncIterator[list[ManagedProcess]]:
    """Clear the run's Redis keys, start ``count`` server processes; stop them when the block ends."""
    _reset_redis()
    started: list[ManagedProcess] = []
    try:
        for index in range(count):
            name = f"{ctx.options.server}-{target}-{index}"
            started.append(ctx.processes.start_server(ctx.options.server, name, application=APPLICATIONS[target]))
        yield started
    finally:
        for process in started:
            ctx.processes.stop(process)


def ws_url(process: ManagedProcess, path: str) -> str:
    """The WebSocket URL of ``path`` on the server ``process``."""
    return f"ws://{LOOPBACK}:{process.port}{path}"


async def wait_registered(key: str, count: int, timeout: float) -> None:
    """Wait until the servers have stored ``count`` socket addresses under ``key``."""
    deadline = time.monotonic() + timeout
    redis = sync_client()
    while (stored := int(redis.scard(key))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stored} of {count} sockets were stored under {key}")
        await asyncio.sleep(0.1)


async def wait_registered_empty(key: str, timeout: float) -> None:
    """Wait until closed sockets have left ``key``, so what follows counts only its own."""
    deadline = time.monotonic() + timeout
    while int(sync_client().scard(key)) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"closed probe sockets stayed stored under {key}")
        await asyncio.sleep(0.1)


def run_sender(ctx: Context, kind: str, arguments: list[str], timeout: float) -> Awaitable[str]:
    """Run ``python -m bench.sender KIND ARGUMENTS`` (:mod:`bench.sender`); its stdout is
    its JSON summary."""
    argv = [sys.executable, "-m", "bench.sender", kind, *arguments]
    return run_command(argv, ctx.env, timeout)
