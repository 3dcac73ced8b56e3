"""Pure limit decisions: connection counts per process, client and group; message rates;
how often refusals are logged.

Nothing here reads settings or touches a socket: the ASGI shell passes the limits in
and acts on the answers (HTTP 503 before the upgrade, close 1013 or 1008 after it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .codes import Closing, close_for

__all__ = ["REFUSAL_LOG_INTERVAL", "ConnectionCounter", "MessageRate", "RefusalLog", "group_refusal"]

#: Seconds during which further limit refusals are counted but not logged.
REFUSAL_LOG_INTERVAL = 10.0


class RefusalLog:
    """Warnings about connections refused or closed by a limit, at most one line per
    :data:`REFUSAL_LOG_INTERVAL` (read on ``clock``): a flood must not flood the log. The
    next line logged says how many were left out."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float]) -> None:
        self._logger = logger
        self._clock = clock
        self._logged_at = -1e9
        self._unlogged = 0

    def warning(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now - self._logged_at < REFUSAL_LOG_INTERVAL:
            self._unlogged += 1
            return
        suppressed, self._unlogged = self._unlogged, 0
        self._logged_at = now
        if suppressed:
            message += f" ({suppressed} more refusals in the last {REFUSAL_LOG_INTERVAL:g} s not logged)"
        self._logger.warning(message, *args)


class ConnectionCounter:
    """Connections of one server process, handshakes in progress included, by client address."""

    __slots__ = ("by_client", "total")

    def __init__(self) -> None:
        self.total = 0
        self.by_client: dict[str, int] = {}

    def refusal(self, client: str, max_total: int | None, max_per_client: int | None) -> str | None:
        """Why one more connection from ``client`` must be refused, or None to admit it."""
        if max_total is not None and self.total >= max_total:
            return f"server is at its limit of {max_total} connections"
        if max_per_client is not None and self.by_client.get(client, 0) >= max_per_client:
            return f"client address is at its limit of {max_per_client} connections"
        return None

    def add(self, client: str) -> None:
        self.total += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1

    def discard(self, client: str) -> None:
        """Forget one connection of ``client``; a client with none left takes no memory."""
        count = self.by_client.get(client, 0)
        if count <= 0:
            return
        self.total -= 1
        if count == 1:
            del self.by_client[client]
        else:
            self.by_client[client] = count - 1


def group_refusal(group: str, members: int, limit: int | None) -> str | None:
    """Why a socket may not join ``group`` that already has ``members`` here, or None."""
    if limit is not None and members >= limit:
        return close_for(Closing.GROUP_FULL, group=group, limit=limit)[1]
    return None


class MessageRate:
    """A token bucket per socket: ``rate`` messages per second on average, ``burst`` at once.

    ``allow(now)`` spends one token for a message arriving at ``now`` (seconds on any
    monotonic clock) and says whether the message is within the limit.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def allow(self, now: float) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
