"""The soak scenario: churn, group broadcasts and sends by ID at once, for a long time.

Against ``--soak-servers`` wsgroups server processes sharing Redis and the database:

- ``--soak-sockets`` stable sockets, spread round-robin over the servers, stay open for
  the whole run;
- churn: ``--soak-churn-per-minute`` sockets a minute are opened (alternating servers),
  kept ``--soak-churn-life`` seconds, then closed by the client;
- a separate process (``bench.sender soak-group``) broadcasts to group ``bench`` every
  ``--soak-broadcast-interval`` seconds; another (``bench.sender soak-ids``) sends to
  every stored ID every ``--soak-ids-interval`` seconds. Every socket, stable or churned,
  is in the group and stored, so both reach sockets on every server.

Every ``--soak-sample`` seconds the client records, per server process, VmRSS and the
number of open file descriptors, with the sockets open on it and the messages sent and
received so far.

Lost messages. Each message carries its sender's sequence number (and, for sends by ID,
the ID it was addressed to); each socket's first frame is ``hello <id>``. The senders log
every call with ``time.monotonic()`` before (``t0``) and after (``t1``) it, the same clock
the client uses. A socket is *known open* from the moment its handshake completed to the
moment the client decides to close it (churn sockets) or to the end (stable sockets); a
churn socket keeps reading for ``--soak-drain`` seconds after that decision before it
sends its close. A message is *expected* at a socket when its call started after the
socket was known open and returned before the socket stopped being known open (and, for
sends by ID, the round addressed the socket's ID). Every expected message that did not
arrive before the socket was closed is *lost*; messages that arrived at sockets outside
that window (calls that overlapped an open or a close) are counted apart and never
expected. Duplicates, messages carrying another socket's ID and closes the client did not
ask for are counted too; all of them must be 0.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import async_timeout
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench import client
from bench.harness import (
    PATHS,
    Context,
    Record,
    fresh_servers,
    mib,
    run_sender,
    spread,
    wait_registered,
    wait_registered_empty,
    ws_url,
)
from bench.registry import WSGROUPS_KEY, sync_client
from bench.report import read_jsonl
from bench.sender import SOAK_SENT_KEY
from bench.servers import ManagedProcess

__all__ = ["NOT_MEASURED", "Accounting", "Load", "Tracked", "account", "soak"]

SCENARIO = "soak"
NOT_MEASURED = "not measured"
HELLO_PATH = f"{PATHS['wsgroups']}?hello=1"
#: Churn sockets in flight at most (a cycle that would exceed it is skipped and counted).
CHURN_IN_FLIGHT = 500


@dataclass
class Tracked:
    """One client connection and what it received."""

    conn: ClientConnection
    server: int
    stable: bool
    opened: float
    slots: int
    known_until: float = math.inf
    socket_id: int | None = None
    group: bytearray = field(default_factory=bytearray)
    ids: bytearray = field(default_factory=bytearray)
    received: int = 0
    duplicates: int = 0
    misdelivered: int = 0
    unparsed: int = 0
    closing: bool = False
    unexpected_close: str = ""
    reader: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.group = bytearray(self.slots)
        self.ids = bytearray(self.slots)

    def take(self, text: str) -> None:
        parts = text.split(" ", 3)
        try:
            kind, seq = parts[0], int(parts[1])
        except (IndexError, ValueError):
            self.unparsed += 1
            return
        if kind == "hello":
            self.socket_id = seq
            return
        seen = self.group if kind == "g" else self.ids if kind == "i" else None
        if seen is None or not 0 <= seq < self.slots:
            self.unparsed += 1
            return
        self.received += 1
        if kind == "i" and (len(parts) < 3 or parts[2] != str(self.socket_id)):
            self.misdelivered += 1
        if seen[seq]:
            self.duplicates += 1
        seen[seq] = 1

    async def read(self) -> None:
        try:
            async for message in self.conn:
                self.take(message if isinstance(message, str) else message.decode())
        except ConnectionClosed as exc:
            if not self.closing:
                self.unexpected_close = client.describe_close(exc.rcvd.code if exc.rcvd else None)
            return
        if not self.closing:
            self.unexpected_close = client.describe_close(self.conn.close_code)


@dataclass
class Load:
    """The live state of a soak run: every connection made, churn counters, samples."""

    slots: int
    tracked: list[Tracked] = field(default_factory=list)
    churn_opened: int = 0
    churn_failed: int = 0
    churn_skipped: int = 0
    churn_first_error: str = ""
    in_flight: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def track(self, conn: ClientConnection, server: int, stable: bool) -> Tracked:
        tracked = Tracked(conn, server, stable, time.monotonic(), self.slots)
        tracked.reader = asyncio.create_task(tracked.read())
        self.tracked.append(tracked)
        return tracked

    def open_on(self, server: int) -> int:
        return sum(1 for t in self.tracked if t.server == server and t.reader is not None and not t.reader.done())

    @property
    def received(self) -> int:
        return sum(t.received for t in self.tracked)


def _fds(process: ManagedProcess) -> int:
    return len(list(Path(f"/proc/{process.pid}/fd").iterdir()))


def _sample(load: Load, servers: list[ManagedProcess], started: float) -> dict[str, Any]:
    sent = int(sync_client().get(SOAK_SENT_KEY) or 0)
    return {
        "t": round(time.monotonic() - started, 2),
        "open": sum(load.open_on(i) for i in range(len(servers))),
        "sent": sent,
        "received": load.received,
        "servers": [
            {
                "name": server.name,
                "rss_mib": round(mib(server.rss_kib()), 2),
                "fds": _fds(server),
                "sockets": load.open_on(index),
            }
            for index, server in enumerate(servers)
        ],
    }


async def _sampler(load: Load, servers: list[ManagedProcess], started: float, every: float, count: int) -> None:
    for index in range(count):
        pause = started + index * every - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        load.samples.append(_sample(load, servers, started))


async def _churn_cycle(load: Load, url: str, server: int, life: float, drain: float) -> None:
    load.in_flight += 1
    try:
        try:
            conn = await client.connect_one(url)
        except Exception as exc:
            load.churn_failed += 1
            load.churn_first_error = load.churn_first_error or repr(exc)
            return
        load.churn_opened += 1
        tracked = load.track(conn, server, stable=False)
        await asyncio.sleep(life)
        tracked.known_until = time.monotonic()
        await asyncio.sleep(drain)
        tracked.closing = True
        await conn.close()
        if tracked.reader is not None:
            await tracked.reader
    finally:
        load.in_flight -= 1


async def _churn(load: Load, urls: list[str], started: float, duration: float, per_minute: float, ctx: Context) -> None:
    """Start one open-keep-close cycle every ``60 / per_minute`` seconds until ``duration``."""
    o = ctx.options
    every = 60.0 / per_minute
    tasks: list[asyncio.Task[None]] = []
    for index in range(int(duration / every) + 1):
        due = started + index * every
        if due >= started + duration:
            break
        pause = due - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        if load.in_flight >= CHURN_IN_FLIGHT:
            load.churn_skipped += 1
            continue
        server = index % len(urls)
        cycle = _churn_cycle(load, urls[server], server, o.soak_churn_life, o.soak_drain)
        tasks.append(asyncio.create_task(cycle))
        tasks = [task for task in tasks if not task.done()]
    await asyncio.gather(*tasks)


def _soak_sender(ctx: Context, kind: str, interval: float, log: Path) -> Awaitable[str]:
    o = ctx.options
    arguments = ["--size", str(o.size), "--duration", str(o.soak_duration)]
    arguments += ["--interval", str(interval), "--log", str(log)]
    return run_sender(ctx, kind, arguments, o.soak_duration + o.soak_margin)


@dataclass
class Accounting:
    """Messages expected at sockets known open, how many of them were lost (and at how many
    sockets), how many expected ones arrived, and sends to IDs the client never held."""

    expected: int = 0
    lost: int = 0
    lost_sockets: int = 0
    in_window_received: int = 0
    unknown_targets: int = 0


def account(load: Load, group_log: list[dict[str, Any]], ids_log: list[dict[str, Any]]) -> Accounting:
    """Expected and lost messages, per socket, from the senders' logs (see the module doc)."""
    result = Accounting()
    lost_at: dict[int, int] = {}
    t0s = [entry["t0"] for entry in group_log]
    t1s = [entry["t1"] for entry in group_log]
    seqs = [entry["seq"] for entry in group_log]
    for index, tracked in enumerate(load.tracked):
        first = bisect.bisect_right(t0s, tracked.opened)
        end = bisect.bisect_left(t1s, tracked.known_until)
        expected = [seqs[i] for i in range(first, max(first, end))]
        got = sum(tracked.group[seq] for seq in expected)
        result.expected += len(expected)
        result.in_window_received += got
        if got < len(expected):
            lost_at[index] = lost_at.get(index, 0) + len(expected) - got
    by_id = {t.socket_id: (index, t) for index, t in enumerate(load.tracked) if t.socket_id is not None}
    for entry in ids_log:
        for socket_id in entry["ids"]:
            found = by_id.get(socket_id)
            if found is None:
                result.unknown_targets += 1
                continue
            index, tracked = found
            if tracked.opened < entry["t0"] and entry["t1"] < tracked.known_until:
                result.expected += 1
                if tracked.ids[entry["seq"]]:
                    result.in_window_received += 1
                else:
                    lost_at[index] = lost_at.get(index, 0) + 1
    result.lost = sum(lost_at.values())
    result.lost_sockets = len(lost_at)
    return result


def _slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else 0.0


def _series_records(
    samples: list[dict[str, Any]], warmup: float, before: list[int], after: list[int], note: str
) -> list[Record]:
    settled = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    records: list[Record] = []
    for index in range(len(before)):
        rss = [(s["t"], s["servers"][index]["rss_mib"]) for s in settled]
        fds = [s["servers"][index]["fds"] for s in settled]
        # File descriptors not held by one of the client's sockets: pools, threads, files.
        beyond = [s["servers"][index]["fds"] - s["servers"][index]["sockets"] for s in settled]
        all_rss = [s["servers"][index]["rss_mib"] for s in samples]
        all_fds = [s["servers"][index]["fds"] for s in samples]
        values = {
            "RSS after warm-up (MiB)": rss[0][1],
            "RSS last (MiB)": rss[-1][1],
            "RSS max (MiB)": max(all_rss),
            "RSS growth after warm-up (MiB)": rss[-1][1] - rss[0][1],
            "RSS slope after warm-up (MiB/min)": _slope_per_minute(rss),
            "fds before sockets": before[index],
            "fds after warm-up": fds[0],
            "fds last": fds[-1],
            "fds max": max(all_fds),
            "fd growth after warm-up": fds[-1] - fds[0],
            "fds beyond open sockets after warm-up": beyond[0],
            "fds beyond open sockets, last": beyond[-1],
            "fds after all closed": after[index],
            "fds after all closed - beyond open sockets after warm-up": after[index] - beyond[0],
        }
        records += [Record(SCENARIO, "wsgroups", f"server {index} {m}", float(v), note=note) for m, v in values.items()]
    return records


BARE_METRICS = ["messages lost", "messages delivered", "server 0 RSS growth after warm-up (MiB)"]


async def soak(ctx: Context, target: str) -> list[Record]:
    """Churn, group broadcasts and sends by ID at once for ``--soak-duration`` seconds."""
    o = ctx.options
    if target != "wsgroups":
        why = (
            f"a bare soak would add {o.soak_duration:g}s to the run and its group_send and per-channel "
            "sends need lower rates (see group broadcast / send by ID); the soak checks wsgroups for leaks"
        )
        return [Record(SCENARIO, target, metric, None, NOT_MEASURED, why) for metric in BARE_METRICS]
    slots = int(o.soak_duration / min(o.soak_broadcast_interval, o.soak_ids_interval)) + 2
    load = Load(slots)
    log_dir = ctx.processes.log_dir
    group_log, ids_log = log_dir / "soak-group.jsonl.log", log_dir / "soak-ids.jsonl.log"
    async with fresh_servers(ctx, target, o.soak_servers) as servers:
        urls = [ws_url(server, HELLO_PATH) for server in servers]
        before = [_fds(server) for server in servers]
        try:
            async with async_timeout.timeout(o.soak_duration + o.soak_margin):
                records = await _run(ctx, load, servers, urls, group_log, ids_log)
        finally:
            await client.close_all([t.conn for t in load.tracked], o.concurrency)
            await asyncio.gather(*(t.reader for t in load.tracked if t.reader is not None), return_exceptions=True)
        await wait_registered_empty(WSGROUPS_KEY, 60)
        await asyncio.sleep(2.0)
        after = [_fds(server) for server in servers]
        note = (
            f"{o.soak_sockets} stable sockets over {o.soak_servers} servers, {o.soak_churn_per_minute:g} churned/min, "
            f"broadcast every {o.soak_broadcast_interval:g}s, IDs every {o.soak_ids_interval:g}s, "
            f"{o.soak_duration:g}s, samples every {o.soak_sample:g}s, warm-up {o.soak_warmup:g}s"
        )
        ctx.samples.extend({"scenario": SCENARIO, "target": target, **s} for s in load.samples)
        return records + _series_records(load.samples, o.soak_warmup, before, after, note)


async def _run(
    ctx: Context, load: Load, servers: list[ManagedProcess], urls: list[str], group_log: Path, ids_log: Path
) -> list[Record]:
    o = ctx.options
    share = spread(o.soak_sockets, len(urls))
    for index, (url, count) in enumerate(zip(urls, share, strict=True)):
        opened = await client.open_many(url, count, o.concurrency)
        for conn in opened.connections:
            load.track(conn, index, stable=True)
        if opened.failures:
            raise RuntimeError(f"{opened.failures} of {count} stable connections failed: {opened.first_error}")
    await wait_registered(WSGROUPS_KEY, o.soak_sockets, o.timeout)
    deadline = time.monotonic() + o.timeout
    while any(t.socket_id is None for t in load.tracked):
        if time.monotonic() > deadline:
            raise RuntimeError("stable sockets did not all receive their hello frame")
        await asyncio.sleep(0.1)
    started = time.monotonic()
    count = int(o.soak_duration / o.soak_sample) + 1
    sampler = asyncio.create_task(_sampler(load, servers, started, o.soak_sample, count))
    senders = asyncio.gather(
        _soak_sender(ctx, "soak-group", o.soak_broadcast_interval, group_log),
        _soak_sender(ctx, "soak-ids", o.soak_ids_interval, ids_log),
    )
    try:
        await _churn(load, urls, started, o.soak_duration, o.soak_churn_per_minute, ctx)
        group_result, ids_result = await senders
        await sampler
    finally:
        for task in (sampler, senders):
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
    # Let the last messages arrive: until nothing came for --soak-drain seconds.
    total, quiet_since = load.received, time.monotonic()
    while time.monotonic() - quiet_since < o.soak_drain:
        await asyncio.sleep(0.2)
        if load.received != total:
            total, quiet_since = load.received, time.monotonic()
    stable = [t for t in load.tracked if t.stable]
    for tracked in stable:
        tracked.known_until = math.inf
    accounting = account(load, read_jsonl(group_log), read_jsonl(ids_log))
    sent = [json.loads(group_result), json.loads(ids_result)]
    unexpected = [t.unexpected_close for t in load.tracked if t.unexpected_close]
    note = "; ".join(f"{unexpected.count(k)} {k}" for k in sorted(set(unexpected)))
    if load.churn_first_error:
        note += f"; first churn error: {load.churn_first_error}"
    values = {
        "messages lost": accounting.lost,
        "sockets that lost messages": accounting.lost_sockets,
        "messages expected": accounting.expected,
        "messages delivered": load.received,
        "messages at open/close edges (not expected)": load.received - accounting.in_window_received,
        "duplicate messages": sum(t.duplicates for t in load.tracked),
        "misdelivered messages": sum(t.misdelivered for t in load.tracked),
        "unparsed frames": sum(t.unparsed for t in load.tracked),
        "unexpected closes": len(unexpected),
        "ID sends to sockets the client never opened": accounting.unknown_targets,
        "group broadcasts sent": sent[0]["calls"],
        "group deliveries accepted": sent[0]["accepted"],
        "ID rounds sent": sent[1]["calls"],
        "ID sends made": sent[1]["sent"],
        "churn cycles": load.churn_opened,
        "failed connections": load.churn_failed,
        "churn cycles skipped": load.churn_skipped,
        "stable sockets": len(stable),
        "samples": len(load.samples),
    }
    return [Record(SCENARIO, "wsgroups", metric, float(value), note=note) for metric, value in values.items()]
