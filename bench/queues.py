"""``python -m bench.queues``: the per-frame cost of the receive queue and the writable
flag the server adapters give each socket (:mod:`wsgroups.servers.queues`), against the
``asyncio.Queue`` and ``asyncio.Event`` they replace, in one process.

A frame at a time is put while the application waits in ``get`` (put, wake, get: what
every incoming frame costs), and ``wait`` is awaited while set (what every outgoing
frame costs under uvicorn). Reports nanoseconds per operation, best of three.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from wsgroups.servers.queues import Flag, ReceiveQueue

FRAMES = 200_000
WAITS = 500_000


async def frame_at_a_time(make: Callable[[], Any], count: int = FRAMES) -> float:
    """Nanoseconds per frame: put one, let the waiting getter take it."""
    queue = make()

    async def application() -> None:
        for _ in range(count):
            await queue.get()

    reader = asyncio.ensure_future(application())
    await asyncio.sleep(0)
    started = time.perf_counter()
    for item in range(count):
        queue.put_nowait(item)
        await asyncio.sleep(0)
    await reader
    return (time.perf_counter() - started) / count * 1e9


async def wait_while_set(make: Callable[[], Any], count: int = WAITS) -> float:
    """Nanoseconds per ``await flag.wait()`` on a set flag."""
    flag = make()
    started = time.perf_counter()
    for _ in range(count):
        await flag.wait()
    return (time.perf_counter() - started) / count * 1e9


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


async def main() -> None:
    print("| operation | asyncio | wsgroups.servers.queues |")
    print("|---|---|---|")
    # Plain loops: Python 3.10 refuses an await in a comprehension nested in another.
    queues = []
    for make_queue in (asyncio.Queue, ReceiveQueue):
        queues.append(min([await frame_at_a_time(make_queue) for _ in range(3)]))
    print(f"| a frame through the receive queue (ns) | {queues[0]:.0f} | {queues[1]:.0f} |")
    flags = []
    for make_flag in (_set_event, lambda: Flag(True)):
        flags.append(min([await wait_while_set(make_flag) for _ in range(3)]))
    print(f"| waiting on the writable flag while set (ns) | {flags[0]:.0f} | {flags[1]:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
