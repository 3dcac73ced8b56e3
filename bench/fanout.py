"""Fan-out measurement shared by the scenarios that send to many sockets from a separate
process (group broadcast, send by ID, the room scenarios of :mod:`bench.rooms`): opening
the connections, running the sender, and turning a delivery into records."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable

from bench import client
from bench.harness import Context, Record, mib, run_sender, spread
from bench.servers import ManagedProcess

__all__ = ["FANOUT_METRICS", "connections", "fanout_records", "sender"]


@contextlib.asynccontextmanager
async def connections(ctx: Context, urls: list[str], count: int) -> AsyncIterator[client.Opened]:
    """Open ``count`` connections spread round-robin over ``urls`` (fail if any does not
    open); close them when the block ends."""
    shares = spread(count, len(urls))
    parts = await asyncio.gather(
        *(client.open_many(url, share, ctx.options.concurrency) for url, share in zip(urls, shares, strict=True))
    )
    opened = client.Opened(
        [conn for part in parts for conn in part.connections],
        sum(part.failures for part in parts),
        max(part.seconds for part in parts),
        next((part.first_error for part in parts if part.first_error), ""),
    )
    if opened.failures:
        await client.close_all(opened.connections, ctx.options.concurrency)
        raise RuntimeError(f"{opened.failures} of {count} connections failed: {opened.first_error}")
    try:
        yield opened
    finally:
        await client.close_all(opened.connections, ctx.options.concurrency)


def sender(ctx: Context, kind: str, messages: int, extra: list[str] | None = None) -> Awaitable[str]:
    """Run ``bench.sender KIND`` for ``messages`` messages (and ``extra`` arguments)."""
    o = ctx.options
    arguments = ["--messages", str(messages), "--size", str(o.size), "--timeout", str(o.timeout), *(extra or [])]
    return run_sender(ctx, kind, arguments, o.timeout)


FANOUT_METRICS = [
    "deliveries/s",
    "first-to-last delivery (s)",
    "messages missing",
    "connections missing messages",
    "connections/s",
    "server RSS (MiB)",
    "sender time (s)",
    "sender ChannelFull retries",
]


def fanout_records(
    scenario: str,
    target: str,
    delivery: client.Delivery,
    opened: client.Opened,
    servers: list[ManagedProcess],
    note: str = "",
) -> list[Record]:
    span = delivery.span
    rate = delivery.received / span if span > 0 else 0.0
    result = delivery.trigger_result
    summary = json.loads(result) if isinstance(result, str) and result.startswith("{") else {}
    values = [
        rate,
        span,
        delivery.missing,
        delivery.connections_missing,
        opened.per_second,
        mib(sum(server.rss_kib() for server in servers)),
        summary.get("seconds"),
        summary.get("retries"),
    ]
    return [
        Record(scenario, target, metric, float(value), note=note)
        for metric, value in zip(FANOUT_METRICS, values, strict=True)
        if value is not None
    ]
