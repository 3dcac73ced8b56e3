"""What senders send and servers relay: the group every benchmark socket is in and the message texts.

Free of Django and Redis, so that the raw ``websockets`` server of :mod:`bench.ceiling`
sends the same texts as :mod:`bench.sender` without loading either.
"""

from __future__ import annotations

__all__ = ["GROUP", "message", "soak_message"]

#: The group of every benchmark socket: wsgroups' group and the channel-layer group of the baseline.
GROUP = "bench"


def message(seq: int, size: int) -> str:
    """The text of message ``seq``, ``size`` characters long (at least the 6 digits)."""
    return f"{seq:06d}".ljust(size, "x")


def soak_message(kind: str, seq: int, size: int, socket_id: int | None = None) -> str:
    """A soak message: ``g <seq>`` or ``i <seq> <id>``, padded with ``x`` to ``size``."""
    head = f"{kind} {seq}" if socket_id is None else f"{kind} {seq} {socket_id}"
    return f"{head} ".ljust(size, "x")
