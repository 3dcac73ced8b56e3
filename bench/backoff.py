"""The reconnect policy: exponential backoff with full jitter, honouring ``Retry-After``.

Before reconnect attempt ``n`` (0 for the first attempt after a drop) a client sleeps a
random time between 0 and ``min(CAP, BASE * 2**n)`` seconds; when the server refused the
previous attempt with a ``Retry-After`` header (wsgroups answers 503 with one at its
connection limits and while shutting down), it sleeps at least that long. Spreading the
reconnects of every client dropped at once (a deploy, a crash) over a growing window is
what keeps them from arriving together at the servers that are left. The storm scenario
(:mod:`bench.storm`) and the demo's chat client (``templates/chat.html``)
follow this policy with the same numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["BASE", "CAP", "parse_retry_after", "reconnect_delay"]

#: Seconds: the window of the first attempt after a drop.
BASE = 0.25
#: Seconds: the window never grows beyond this.
CAP = 10.0
#: Above this the window is ``cap`` anyway; it keeps ``2**attempt`` small.
_MAX_DOUBLINGS = 30


def reconnect_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = BASE,
    cap: float = CAP,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to sleep before reconnect attempt ``attempt`` (0, 1, 2, …): uniform in
    ``[0, min(cap, base * 2**attempt))``, and at least ``retry_after`` when given."""
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    if base <= 0 or cap < base:
        raise ValueError(f"base must be positive and cap at least base, got base={base}, cap={cap}")
    delay = rng() * min(cap, base * 2 ** min(attempt, _MAX_DOUBLINGS))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """The seconds of a ``Retry-After`` header in its delay form (``"5"``); None when the
    header is missing or holds anything else (an HTTP date is not honoured)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
