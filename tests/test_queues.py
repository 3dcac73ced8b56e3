from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from wsgroups.servers.queues import Flag, ReceiveQueue


def on_a_loop(test):
    """Run the coroutine function ``test`` on an event loop of its own (no pytest plugin)."""

    def run() -> None:
        asyncio.run(test())

    run.__name__ = test.__name__
    return run


@on_a_loop
async def test_items_come_out_in_the_order_they_went_in():
    queue = ReceiveQueue()
    assert queue.empty() and queue.qsize() == 0
    for item in ("connect", "a", "b"):
        queue.put_nowait(item)
    assert not queue.empty() and queue.qsize() == 3
    assert [await queue.get() for _ in range(3)] == ["connect", "a", "b"]
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


@on_a_loop
async def test_get_waits_for_the_next_put():
    queue = ReceiveQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait({"type": "websocket.disconnect"})
    assert await asyncio.wait_for(getter, 1) == {"type": "websocket.disconnect"}


@on_a_loop
async def test_a_cancelled_get_loses_no_item_and_passes_its_wake_up_on():
    queue = ReceiveQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes the first getter ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "only"
    assert first.cancelled()
    assert queue.empty()


@on_a_loop
async def test_a_cancelled_get_leaves_nothing_behind():
    queue = ReceiveQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert queue._getters is None and queue._items is None
    queue.put_nowait("later")
    assert await queue.get() == "later"


@on_a_loop
async def test_a_flag_wakes_every_waiter_when_set_and_not_before():
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert flag.is_set() and await flag.wait()  # set: returns at once
    flag.clear()
    late = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert flag._waiters is None


def _bytes_per(make, count: int = 2000) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(count)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept) == count
    return (after - before) / count


@on_a_loop
async def test_idle_they_cost_a_small_fraction_of_asyncios():
    ours = _bytes_per(ReceiveQueue) + _bytes_per(Flag)
    asyncios = _bytes_per(asyncio.Queue) + _bytes_per(asyncio.Event)
    assert ours < 200 < 3000 < asyncios, (ours, asyncios)


@on_a_loop
async def test_a_drained_queue_lets_its_storage_go():
    queue = ReceiveQueue()
    queue.put_nowait("x")
    assert queue._items is not None
    await queue.get()
    assert queue._items is None and queue._getters is None


@on_a_loop
async def test_the_benchmark_of_their_per_frame_cost_runs_both_sides():
    from bench.queues import frame_at_a_time, wait_while_set

    for make in (asyncio.Queue, ReceiveQueue):
        assert await frame_at_a_time(make, count=200) > 0
    assert await wait_while_set(lambda: Flag(True), count=200) > 0
