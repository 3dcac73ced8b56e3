"""What a process counts for monitoring, in the form its heartbeat carries to the database.

Each process keeps monotonic counters (messages received and sent, closes by code,
refusals by reason, failed channel-layer calls) and a histogram of handler run times.
:func:`snapshot` turns them into the JSON its heartbeat writes to ``Process.metrics``;
:func:`read_snapshot` reads such a row back, tolerating rows written before a field
existed. ``wsgroups.views.metrics`` turns the rows of the live processes into
Prometheus' text format, so a scrape reads the database once and asks no other process.

No I/O here: the hot path only calls :meth:`HandlerTimes.observe` and bumps dict counters.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HANDLER_BUCKETS",
    "REFUSAL_REASONS",
    "HandlerTimes",
    "ProcessMetrics",
    "read_snapshot",
    "snapshot",
]

#: Upper bounds (seconds) of the handler-time histogram's buckets; +Inf is implied.
HANDLER_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Process counter → the ``reason`` label of ``wsgroups_refusals_total``: upgrades refused
#: (503 at a connection limit, 503 for a view that did not decide in time, 403 for the
#: origin, 503 while shutting down, the view's own response) and sockets closed by a
#: limit (1013 for a full group or a client that does not read, 1008 for the message rate).
REFUSAL_REASONS: Mapping[str, str] = {
    "refused_at_limit": "connection_limit",
    "handshake_timeouts": "handshake_timeout",
    "origin_refused": "origin",
    "shutdown_refused": "shutting_down",
    "view_rejected": "view",
    "group_full": "group_full",
    "rate_limited": "message_rate",
    "outbox_overflows": "outbox_full",
}


class HandlerTimes:
    """A histogram of handler run times: a count per bucket (not cumulative), the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(HANDLER_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one handler call that took ``seconds`` (a bucket holds values up to its bound)."""
        self.counts[bisect_left(HANDLER_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class ProcessMetrics:
    """One process's counters as its last heartbeat recorded them."""

    received: int = 0
    sent: int = 0
    closes: dict[int, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    layer_errors: int = 0
    #: Bucket upper bounds and the count in each bucket (the last one is +Inf).
    handler_bounds: tuple[float, ...] = HANDLER_BUCKETS
    handler_counts: tuple[int, ...] = (0,) * (len(HANDLER_BUCKETS) + 1)
    handler_sum: float = 0.0

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them: cumulative, ending at ``+Inf``."""
        total, buckets = 0, []
        for bound, count in zip((*self.handler_bounds, float("inf")), self.handler_counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return buckets


def snapshot(
    stats: Mapping[str, int], closes: Mapping[int, int], layer_errors: int, handler_times: HandlerTimes
) -> dict[str, Any]:
    """The JSON a heartbeat writes to ``Process.metrics`` (``stats`` is the runtime's counters)."""
    return {
        "received": stats.get("frames_in", 0),
        "sent": stats.get("frames_out", 0),
        "closes": {str(code): count for code, count in sorted(closes.items())},
        "refusals": {reason: stats.get(name, 0) for name, reason in REFUSAL_REASONS.items()},
        "layer_errors": layer_errors,
        "handler_seconds": {
            "bounds": list(HANDLER_BUCKETS),
            "counts": list(handler_times.counts),
            "sum": handler_times.sum,
        },
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def read_snapshot(data: Any) -> ProcessMetrics:
    """A ``Process.metrics`` value as :class:`ProcessMetrics`; what is missing or malformed
    (a row of an older version, a process that never sent one) reads as zero."""
    if not isinstance(data, dict):
        return ProcessMetrics()
    closes_raw = data.get("closes")
    closes = {
        int(code): _count(count)
        for code, count in (closes_raw.items() if isinstance(closes_raw, dict) else ())
        if isinstance(code, str) and code.isdigit()
    }
    refusals_raw = data.get("refusals")
    refusals = {
        str(reason): _count(count) for reason, count in (refusals_raw.items() if isinstance(refusals_raw, dict) else ())
    }
    handler = data.get("handler_seconds")
    bounds: tuple[float, ...] = HANDLER_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(HANDLER_BUCKETS) + 1)
    total = 0.0
    if isinstance(handler, dict):
        raw_bounds, raw_counts = handler.get("bounds"), handler.get("counts")
        if (
            isinstance(raw_bounds, list)
            and isinstance(raw_counts, list)
            and len(raw_counts) == len(raw_bounds) + 1
            and all(isinstance(b, int | float) for b in raw_bounds)
        ):
            bounds = tuple(float(b) for b in raw_bounds)
            counts = tuple(_count(c) for c in raw_counts)
            raw_sum = handler.get("sum")
            total = float(raw_sum) if isinstance(raw_sum, int | float) else 0.0
    return ProcessMetrics(
        received=_count(data.get("received")),
        sent=_count(data.get("sent")),
        closes=closes,
        refusals=refusals,
        layer_errors=_count(data.get("layer_errors")),
        handler_bounds=bounds,
        handler_counts=counts,
        handler_sum=total,
    )
