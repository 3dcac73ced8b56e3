"""The load client: many ``websockets`` connections from one asyncio process.

All sizes and waits are bounded: connections open in batches under a concurrency
limit with an open timeout, every receive has a deadline, and nothing is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")

__all__ = [
    "Churn",
    "Delivery",
    "Echo",
    "Opened",
    "churn",
    "close_all",
    "collect",
    "connect_one",
    "describe_close",
    "echo",
    "open_many",
    "raise_fd_limit",
]

OPEN_TIMEOUT = 20.0


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit toward ``wanted``; return the soft limit now in force.

    The hard limit is raised too when the process may do so (root); otherwise the soft
    limit goes up to the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def describe_close(code: int | None) -> str:
    """How a connection the client did not close ended: ``closed (<code>)``, or
    ``closed (no close frame)`` when ``code`` is None."""
    return f"closed ({code if code is not None else 'no close frame'})"


#: What the client offers in ``Sec-WebSocket-Extensions``: None, or "deflate" (``--permessage-deflate``).
compression: str | None = None


def offer_compression(offer: bool) -> None:
    """Make every connection opened from now on offer permessage-deflate (or not), as browsers do."""
    global compression
    compression = "deflate" if offer else None


async def connect_one(url: str) -> ClientConnection:
    """Open one connection (no client pings, bounded handshake; permessage-deflate offered
    only after :func:`offer_compression`)."""
    return await connect(url, open_timeout=OPEN_TIMEOUT, close_timeout=5, ping_interval=None, compression=compression)


async def _bounded(jobs: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> list[T | BaseException]:
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True)


@dataclass
class Opened:
    """Connections that opened, how many failed (and the first error), and the time taken."""

    connections: list[ClientConnection]
    failures: int
    seconds: float
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return len(self.connections) / self.seconds if self.seconds > 0 else 0.0


async def open_many(url: str, count: int, concurrency: int) -> Opened:
    """Open ``count`` connections to ``url``, at most ``concurrency`` handshakes at a time."""
    started = time.monotonic()
    results = await _bounded([lambda: connect_one(url) for _ in range(count)], concurrency)
    seconds = time.monotonic() - started
    connections = [r for r in results if isinstance(r, ClientConnection)]
    errors = [r for r in results if not isinstance(r, ClientConnection)]
    return Opened(connections, len(errors), seconds, repr(errors[0]) if errors else "")


async def close_all(connections: Sequence[ClientConnection], concurrency: int) -> None:
    """Close every connection, ``concurrency`` at a time (each close is bounded by its timeout)."""
    await _bounded([conn.close for conn in connections], concurrency)


@dataclass
class Delivery:
    """What a fan-out delivered: per-connection counts and the first and last arrival times."""

    expected_each: int
    counts: list[int]
    first: float | None
    last: float | None
    trigger_result: object = None
    ended: list[str] = field(default_factory=list)

    @property
    def received(self) -> int:
        return sum(self.counts)

    @property
    def missing(self) -> int:
        return sum(max(self.expected_each - count, 0) for count in self.counts)

    @property
    def connections_missing(self) -> int:
        return sum(1 for count in self.counts if count < self.expected_each)

    def why_missing(self) -> str:
        """How the connections that missed messages ended: closed by the peer, or still open."""
        if not self.ended:
            return ""
        kinds = sorted(set(self.ended))
        counts = ", ".join(f"{self.ended.count(k)} {k or 'still open'}" for k in kinds)
        return f"connections missing messages: {counts}"

    @property
    def span(self) -> float:
        return (self.last - self.first) if self.first is not None and self.last is not None else 0.0


@dataclass
class _Counter:
    count: int = 0
    first: float | None = None
    last: float | None = None
    ended: str = ""


async def collect(
    connections: Sequence[ClientConnection],
    expected_each: int,
    trigger: Awaitable[object],
    timeout: float,
    idle: float,
) -> Delivery:
    """Count frames on every connection while ``trigger`` (the sender) runs.

    Stops when each connection has ``expected_each`` frames, or once ``trigger`` is done
    and nothing arrived for ``idle`` seconds, or after ``timeout`` seconds in all.
    ``trigger``'s exception, if any, is raised after the counting stops; its result
    is kept as ``trigger_result`` (None if it was still running).
    """
    counters = [_Counter() for _ in connections]

    async def read(conn: ClientConnection, counter: _Counter) -> None:
        while counter.count < expected_each:
            try:
                await conn.recv()
            except ConnectionClosed as exc:
                counter.ended = describe_close(exc.rcvd.code if exc.rcvd else None)
                return
            now = time.monotonic()
            if counter.first is None:
                counter.first = now
            counter.last = now
            counter.count += 1

    readers = [asyncio.create_task(read(c, k)) for c, k in zip(connections, counters, strict=True)]
    sender = asyncio.ensure_future(trigger)
    deadline = time.monotonic() + timeout
    total, quiet_since = -1, time.monotonic()
    try:
        while time.monotonic() < deadline:
            pending = [task for task in readers if not task.done()]
            if not pending and sender.done():
                break
            await asyncio.wait([*pending, sender], timeout=0.2)
            now_total = sum(k.count for k in counters)
            if now_total != total:
                total, quiet_since = now_total, time.monotonic()
            elif sender.done() and time.monotonic() - quiet_since > idle:
                break
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    if not sender.cancelled() and sender.exception() is not None:
        raise sender.exception()  # type: ignore[misc]
    firsts = [k.first for k in counters if k.first is not None]
    lasts = [k.last for k in counters if k.last is not None]
    return Delivery(
        expected_each,
        [k.count for k in counters],
        min(firsts) if firsts else None,
        max(lasts) if lasts else None,
        None if sender.cancelled() else sender.result(),
        [k.ended for k in counters if k.count < expected_each],
    )


@dataclass
class Echo:
    """Round trips of an echo run, in seconds, and its wall time."""

    rtts: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        if len(self.rtts) < 2:
            return self.rtts[0] if self.rtts else 0.0
        return statistics.quantiles(self.rtts, n=100, method="inclusive")[int(q) - 1]

    @property
    def per_second(self) -> float:
        return len(self.rtts) / self.seconds if self.seconds > 0 else 0.0


async def echo(connections: Sequence[ClientConnection], messages: int, size: int, timeout: float) -> Echo:
    """Each connection sends ``messages`` text frames of ``size`` bytes, one at a time,
    awaiting each reply (``timeout`` seconds at most) before the next."""
    result = Echo()
    payload = "e" * size

    async def run(conn: ClientConnection) -> None:
        for _ in range(messages):
            started = time.monotonic()
            await conn.send(payload)
            reply = await asyncio.wait_for(conn.recv(), timeout)
            if reply != payload:
                raise RuntimeError(f"echo returned {str(reply)[:40]!r}")
            result.rtts.append(time.monotonic() - started)

    started = time.monotonic()
    outcomes = await asyncio.gather(*(run(conn) for conn in connections), return_exceptions=True)
    result.seconds = time.monotonic() - started
    result.failures = sum(1 for outcome in outcomes if isinstance(outcome, BaseException))
    return result


@dataclass
class Churn:
    """Open-and-close cycles completed, failed, and the time they took."""

    done: int
    failures: int
    seconds: float
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


async def churn(url: str, count: int, concurrency: int) -> Churn:
    """Open and close ``count`` connections, ``concurrency`` at a time."""

    async def one() -> None:
        conn = await connect_one(url)
        await conn.close()

    started = time.monotonic()
    results = await _bounded([one for _ in range(count)], concurrency)
    seconds = time.monotonic() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    return Churn(count - len(errors), len(errors), seconds, repr(errors[0]) if errors else "")
