"""The socket ID scheme.

An ID is a positive integer below 2**53, so it survives JSON and JavaScript numbers.
Its high bits are an *ID block* (a database row allocated to one process, never
reused) and its low :data:`SEQUENCE_BITS` bits count the sockets opened under that
block. The block tells any process which process holds the socket without asking the
database on every send: block → process is fixed once allocated, so it can be cached.
"""

from __future__ import annotations

__all__ = ["MAX_BLOCK", "MAX_ID", "MAX_SEQUENCE", "SEQUENCE_BITS", "make_id", "split_id", "validate_id"]

SEQUENCE_BITS = 22
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_ID = (1 << 53) - 1
MAX_BLOCK = MAX_ID >> SEQUENCE_BITS


def make_id(block: int, sequence: int) -> int:
    """Compose an ID; ``sequence`` starts at 1 so that no ID is 0."""
    if not 1 <= block <= MAX_BLOCK:
        raise ValueError(f"block must be in 1..{MAX_BLOCK}, got {block!r}")
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence must be in 1..{MAX_SEQUENCE}, got {sequence!r}")
    return (block << SEQUENCE_BITS) | sequence


def split_id(socket_id: int) -> tuple[int, int]:
    """Return ``(block, sequence)`` of a valid ID."""
    return socket_id >> SEQUENCE_BITS, socket_id & MAX_SEQUENCE


def validate_id(value: object, argument: str = "id") -> int:
    """Return ``value`` as an ID, or raise naming ``argument``.

    Accepts ints and decimal strings (IDs often come back from forms, URLs and JSON).
    """
    if isinstance(value, bool):
        raise TypeError(f"{argument} must be an integer WebSocket ID, got a bool")
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= 16):
            raise ValueError(f"{argument} must be a decimal WebSocket ID, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise TypeError(f"{argument} must be an integer WebSocket ID, got {type(value).__name__}")
    block, sequence = split_id(value)
    if not 0 < value <= MAX_ID or block == 0 or sequence == 0:
        raise ValueError(f"{argument} is not a WebSocket ID: {value!r}")
    return value
