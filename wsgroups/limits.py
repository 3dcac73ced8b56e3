"""Pure limit decisions: connection counts per process, client and group; message rates.

Nothing here reads settings or touches a socket: the ASGI shell passes the limits in
and acts on the answers (HTTP 503 before the upgrade, close 1013 or 1008 after it).
"""

from __future__ import annotations

from .codes import Closing, close_for

__all__ = ["ConnectionCounter", "MessageRate", "group_refusal"]


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
