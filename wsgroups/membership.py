"""A process's membership of the cluster: joining it, heartbeats, and reaping the dead.

Every ``HEARTBEAT_INTERVAL`` a member refreshes its heartbeat (with its message rates,
limit counts and monitoring counters, :mod:`wsgroups.metrics`), claims the processes
whose heartbeat is older than ``PROCESS_TIMEOUT`` and runs the disconnect handlers of
their sockets — each dead process is claimed by exactly one member — and prunes old
registry rows once a minute.
A member that finds itself declared dead closes its sockets without running their
handlers again (another member did) and rejoins as a new process.
"""

from __future__ import annotations

import asyncio
import logging

from . import cluster
from .cluster import in_thread
from .codes import Closing, close_for
from .conf import conf
from .dispatch import run_disconnect
from .inbox import Inbox
from .runtime import LIMIT_COUNTERS, Runtime

__all__ = ["PRUNE_INTERVAL", "heartbeat_loop", "join"]

logger = logging.getLogger("wsgroups")

#: Seconds between two prunings of closed sockets from the registry.
PRUNE_INTERVAL = 60.0


async def join(runtime: Runtime, kind: str = "server") -> None:
    """Make ``runtime``'s process a ``kind`` member of the cluster (once)."""
    if not runtime.started:
        await runtime.start(kind, on_ops=Inbox(runtime), duties=(heartbeat_loop,))


async def heartbeat_loop(runtime: Runtime) -> None:
    """Heartbeat, reap dead processes (running their sockets' disconnect handlers), prune."""
    stats = runtime.stats
    pruned_at = 0.0
    counted_at, frames_in, frames_out = runtime.loop.time(), 0, 0
    while True:
        await asyncio.sleep(conf.HEARTBEAT_INTERVAL)
        try:
            now = runtime.loop.time()
            elapsed = max(now - counted_at, 1e-6)
            rates = ((stats["frames_in"] - frames_in) / elapsed, (stats["frames_out"] - frames_out) / elapsed)
            counted_at, frames_in, frames_out = now, stats["frames_in"], stats["frames_out"]
            limit_events = {name: stats[name] for name in LIMIT_COUNTERS if stats[name]}
            assert runtime.process_id is not None
            metrics = runtime.metrics_snapshot()
            if not await in_thread(cluster.heartbeat)(runtime.process_id, *rates, limit_events, metrics):
                await _rejoin(runtime)
            for socket_id, group, session_key in await in_thread(cluster.reap_dead_processes)(runtime.process_id):
                stats["reaped"] += 1
                await run_disconnect(runtime, socket_id, group, session_key)
            if runtime.loop.time() - pruned_at > PRUNE_INTERVAL:
                pruned_at = runtime.loop.time()
                await in_thread(cluster.prune_closed_connections)()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("wsgroups: heartbeat failed")


async def _rejoin(runtime: Runtime) -> None:
    """Another process took this one for dead (its heartbeats stalled) and reaped the
    sockets it found registered. Keep the cluster's verdict true: close every socket, run
    the disconnect handlers of those the reaper did not see (registered since), not of
    the others again, and come back as a new process with new ID blocks."""
    logger.error(
        "wsgroups: process #%s was declared dead after %.0fs without a heartbeat; closing its %d sockets and rejoining",
        runtime.process_id,
        conf.PROCESS_TIMEOUT,
        len(runtime.table),
    )
    assert runtime.process_id is not None
    await runtime.flush_registry()  # so that every socket held here has its row
    reaped = await in_thread(cluster.reaped_socket_ids)(runtime.process_id)
    for sock in runtime.table.close_all(*close_for(Closing.CLUSTER_LOST)):
        sock.reaped = sock.reaped or sock.id in reaped
    await runtime.rejoin()
