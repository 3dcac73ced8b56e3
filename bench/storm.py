"""The reconnect storm: one of two servers is stopped with SIGTERM while its clients
reconnect to the other with the backoff of :mod:`bench.backoff`; then it comes back.

``--storm-sockets`` sockets (reduced to what the client's open-file limit allows) are
opened over 2 wsgroups server processes, alternating, each on ``/bench/ws?hello=1`` (the
first frame says the socket's ID). A separate process (``bench.sender soak-ids``) sends
by ID to every stored ID every ``--storm-ids-interval`` seconds for ``--storm-duration``
seconds. As soon as it has logged its first round, server 0 gets SIGTERM (those sends still
on their way to it must reach its sockets first); every socket on it is closed with 1001
and the client behind each one reconnects, sleeping
:func:`bench.backoff.reconnect_delay` before each attempt. The first attempt goes to the
other server; after a failed one the server is picked at random, so once server 0 is
back (it is restarted on its port as soon as its process has exited) attempts may land on
either. A 503 is retried after at least its ``Retry-After``.

Reported: seconds from the SIGTERM until every client was connected again, attempts,
503 refusals (with ``Retry-After`` and not) and other failed attempts, how many times the
disconnect handler of every socket ran (the bench app's handler counts its runs per ID in
:data:`bench.registry.DISCONNECTS_KEY`: the old sockets' must be exactly 1 each once the
storm is over, every socket's exactly 1 once all are closed), and messages lost: a send
by ID is expected at a socket when its round started after the socket opened and
returned before the SIGTERM (old sockets) or before the end (all others) — the
accounting of :func:`bench.soak.account`.

The bare consumer has no socket IDs to send to from another process and nothing that
runs its disconnect for a process that is gone: its rows say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidStatus

from bench import client
from bench.backoff import parse_retry_after, reconnect_delay
from bench.harness import PATHS, Context, Record, fresh_servers, run_sender, spread, ws_url
from bench.registry import DISCONNECTS_KEY, WSGROUPS_KEY, sync_client
from bench.report import read_jsonl
from bench.servers import BENCH_APPLICATION, LOOPBACK, ManagedProcess, server_argv
from bench.soak import Load, Tracked, account

__all__ = ["METRICS", "SCENARIO", "storm"]

SCENARIO = "reconnect storm"
HELLO_PATH = f"{PATHS['wsgroups']}?hello=1"
#: File descriptors the client keeps free for everything but its connections.
FD_RESERVE = 500
METRICS = [
    "sockets",
    "old sockets (on the stopped server)",
    "seconds until every client reconnected",
    "seconds until half reconnected",
    "seconds the stopped server took to exit",
    "reconnect attempts",
    "handshakes refused with 503",
    "503s with Retry-After",
    "other failed attempts",
    "clients that never reconnected",
    "old sockets closed with 1001",
    "old sockets whose handler did not run",
    "disconnect handlers run more than once",
    "sockets whose handler did not run once in the end",
    "messages lost",
    "of them at old sockets",
    "latest lost send at an old socket: seconds before the SIGTERM",
    "messages expected",
    "messages delivered",
    "duplicate messages",
    "misdelivered messages",
    "unexpected closes",
    "reconnects to the restarted server",
]


@dataclass
class Attempts:
    """What the reconnecting clients went through."""

    made: int = 0
    refused_503: int = 0
    with_retry_after: int = 0
    failed: int = 0
    #: Failed attempts by kind: the exception's type, or the HTTP status.
    kinds: dict[str, int] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.failed += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    gave_up: int = 0


async def _reconnect(load: Load, old: Tracked, urls: list[str], attempts: Attempts, deadline: float) -> float | None:
    """Wait for ``old`` to be closed by its server, then reconnect with backoff; return when
    the new connection opened (None when the deadline passed first)."""
    if old.reader is not None:
        await old.reader
    server, attempt, retry_after = 1 - old.server, 0, None
    while True:
        delay = reconnect_delay(attempt, retry_after)
        if time.monotonic() + delay > deadline:
            attempts.gave_up += 1
            return None
        await asyncio.sleep(delay)
        attempts.made += 1
        try:
            conn = await client.connect_one(urls[server])
        except InvalidStatus as exc:
            retry_after = None
            if exc.response.status_code == 503:
                attempts.refused_503 += 1
                retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
                attempts.with_retry_after += retry_after is not None
            else:
                attempts.fail(f"HTTP {exc.response.status_code}")
        except Exception as exc:  # refused TCP (server down), timeouts, broken handshakes
            retry_after = None
            attempts.fail(type(exc).__name__)
        else:
            load.track(conn, server, stable=True)
            return time.monotonic()
        attempt += 1
        server = random.randrange(len(urls))


async def _wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the restarted server did not listen on {port} in {timeout}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def _stop_and_restart(ctx: Context, servers: list[ManagedProcess], timeout: float) -> tuple[float, float]:
    """SIGTERM server 0, wait for its exit (without blocking the client), start it again on
    its port; return (when SIGTERM was sent, seconds until it exited)."""
    victim = servers[0]
    sent = time.monotonic()
    os.killpg(victim.pid, signal.SIGTERM)
    while victim.popen.poll() is None:
        if time.monotonic() - sent > timeout:
            raise RuntimeError(f"{victim.name} did not exit within {timeout}s of SIGTERM")
        await asyncio.sleep(0.05)
    exited = time.monotonic() - sent
    ctx.processes.processes.remove(victim)
    argv = server_argv(ctx.options.server, victim.port, BENCH_APPLICATION, ("--log-level", "warning"))
    servers[0] = ctx.processes.start(f"{victim.name}-restarted", argv, victim.port)
    await _wait_listening(victim.port, 60)
    return sent, exited


async def _handler_counts(ids: list[int]) -> list[int]:
    counts = sync_client().hmget(DISCONNECTS_KEY, [str(i) for i in ids]) if ids else []
    return [int(c or 0) for c in counts]


async def _wait_handlers(ids: list[int], timeout: float) -> list[int]:
    """Wait until every ID's handler ran (or ``timeout``), then 2 s more for second runs."""
    deadline = time.monotonic() + timeout
    while 0 in await _handler_counts(ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)
    return await _handler_counts(ids)


def _sockets(ctx: Context) -> tuple[int, str]:
    wanted = ctx.options.storm_sockets
    usable = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_RESERVE
    if wanted > usable:
        return usable, f" (reduced from {wanted}: open-file limit)"
    return wanted, ""


async def storm(ctx: Context, target: str) -> list[Record]:
    """See the module doc."""
    if target != "wsgroups":
        why = (
            "wsgroups only: a bare Channels consumer has no IDs to send to from another process and "
            "nothing runs its disconnect for a server process that is gone"
        )
        return [Record(SCENARIO, target, metric, None, "not measured", why) for metric in METRICS]
    o = ctx.options
    sockets, reduced = _sockets(ctx)
    slots = int(o.storm_duration / o.storm_ids_interval) + 2
    load = Load(slots)
    ids_log = ctx.processes.log_dir / "storm-ids.jsonl.log"
    async with fresh_servers(ctx, target, 2) as servers:
        urls = [ws_url(server, HELLO_PATH) for server in servers]
        try:
            return await _run(ctx, load, servers, urls, sockets, reduced, ids_log)
        finally:
            await client.close_all([t.conn for t in load.tracked], o.concurrency)
            await asyncio.gather(*(t.reader for t in load.tracked if t.reader is not None), return_exceptions=True)


async def _open(ctx: Context, load: Load, urls: list[str], sockets: int) -> None:
    for index, count in enumerate(spread(sockets, len(urls))):
        opened = await client.open_many(urls[index], count, ctx.options.concurrency)
        for conn in opened.connections:
            load.track(conn, index, stable=True)
        if opened.failures:
            raise RuntimeError(f"{opened.failures} of {count} connections failed: {opened.first_error}")
    deadline = time.monotonic() + ctx.options.timeout
    while any(t.socket_id is None for t in load.tracked) or int(sync_client().scard(WSGROUPS_KEY)) < sockets:
        if time.monotonic() > deadline:
            raise RuntimeError("the sockets did not all get their hello frame and a stored ID")
        await asyncio.sleep(0.1)


def _lost_at_old(old: list[Tracked], entries: list[dict[str, Any]], sigterm: float) -> tuple[int, float]:
    """Sends by ID expected at the old sockets that did not arrive, and how long before
    the SIGTERM the latest of their rounds returned (0 when none was lost)."""
    by_id = {t.socket_id: t for t in old if t.socket_id is not None}
    lost, latest = 0, -math.inf
    for entry in entries:
        for socket_id in entry["ids"]:
            tracked = by_id.get(socket_id)
            expected = tracked is not None and tracked.opened < entry["t0"] and entry["t1"] < tracked.known_until
            if expected and tracked is not None and not tracked.ids[entry["seq"]]:
                lost += 1
                latest = max(latest, entry["t1"])
    return lost, sigterm - latest if lost else 0.0


async def _first_round(ids_log: Path, sender: asyncio.Future[str], timeout: float) -> None:
    """Wait until the sender has logged its first round, so the storm starts with sends in flight."""
    deadline = time.monotonic() + timeout
    while not (ids_log.exists() and ids_log.read_text().count("\n") >= 1):
        if sender.done() or time.monotonic() > deadline:
            raise RuntimeError(f"the sender logged no round within {timeout}s")
        await asyncio.sleep(0.05)


async def _run(
    ctx: Context,
    load: Load,
    servers: list[ManagedProcess],
    urls: list[str],
    sockets: int,
    reduced: str,
    ids_log: Path,
) -> list[Record]:
    o = ctx.options
    await _open(ctx, load, urls, sockets)
    old = [t for t in load.tracked if t.server == 0]
    arguments = ["--duration", str(o.storm_duration), "--interval", str(o.storm_ids_interval)]
    arguments += ["--size", str(o.size), "--log", str(ids_log)]
    sender = asyncio.ensure_future(run_sender(ctx, "soak-ids", arguments, o.storm_duration + o.timeout))
    # At once: most of the first round's sends to server 0 are still in its channel when the
    # signal comes, and its shutdown must deliver them before its 1001s.
    await _first_round(ids_log, sender, o.timeout)
    attempts = Attempts()
    deadline = time.monotonic() + o.timeout
    reconnects = [asyncio.ensure_future(_reconnect(load, t, urls, attempts, deadline)) for t in old]
    try:
        sigterm, exited = await _stop_and_restart(ctx, servers, o.timeout)
        for tracked in old:
            tracked.known_until = sigterm
        back = [t for t in await asyncio.gather(*reconnects) if t is not None]
        await sender
    finally:
        for task in [*reconnects, sender]:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
    old_ids = [t.socket_id for t in old if t.socket_id is not None]
    old_counts = await _wait_handlers(old_ids, o.timeout)
    total, quiet_since = load.received, time.monotonic()
    while time.monotonic() - quiet_since < 2.0:
        await asyncio.sleep(0.2)
        if load.received != total:
            total, quiet_since = load.received, time.monotonic()
    ids_entries = read_jsonl(ids_log)
    accounting = account(load, [], ids_entries)
    lost_old, latest_lost = _lost_at_old(old, ids_entries, sigterm)
    closes = [t.unexpected_close for t in old]
    others = [t.unexpected_close for t in load.tracked if t not in old and t.unexpected_close]
    back.sort()
    restarted = sum(1 for t in load.tracked[sockets:] if t.server == 0)
    for tracked in load.tracked:
        tracked.closing = True
    await client.close_all([t.conn for t in load.tracked], o.concurrency)
    all_ids = [t.socket_id for t in load.tracked if t.socket_id is not None]
    all_counts = await _wait_handlers(all_ids, o.timeout)
    values = {
        "sockets": sockets,
        "old sockets (on the stopped server)": len(old),
        "seconds until every client reconnected": back[-1] - sigterm if len(back) == len(old) and back else -1,
        "seconds until half reconnected": back[len(old) // 2 - 1] - sigterm if len(back) * 2 >= len(old) > 1 else -1,
        "seconds the stopped server took to exit": exited,
        "reconnect attempts": attempts.made,
        "handshakes refused with 503": attempts.refused_503,
        "503s with Retry-After": attempts.with_retry_after,
        "other failed attempts": attempts.failed,
        "clients that never reconnected": len(old) - len(back),
        "old sockets closed with 1001": closes.count(client.describe_close(1001)),
        "old sockets whose handler did not run": old_counts.count(0),
        "disconnect handlers run more than once": sum(1 for c in all_counts if c > 1),
        "sockets whose handler did not run once in the end": sum(1 for c in all_counts if c != 1),
        "messages lost": accounting.lost,
        "of them at old sockets": lost_old,
        "latest lost send at an old socket: seconds before the SIGTERM": latest_lost,
        "messages expected": accounting.expected,
        "messages delivered": load.received,
        "duplicate messages": sum(t.duplicates for t in load.tracked),
        "misdelivered messages": sum(t.misdelivered for t in load.tracked),
        "unexpected closes": len(others),
        "reconnects to the restarted server": restarted,
    }
    note = (
        f"{sockets} sockets over 2 servers{reduced}, SIGTERM to server 0 then restart; sends by ID every "
        f"{o.storm_ids_interval:g}s for {o.storm_duration:g}s; backoff full jitter 0.25 s doubling to 10 s"
    )
    if attempts.kinds:
        note += "; failed attempts: " + ", ".join(f"{n} {kind}" for kind, n in sorted(attempts.kinds.items()))
    return [Record(SCENARIO, "wsgroups", metric, float(value), note=note) for metric, value in values.items()]
