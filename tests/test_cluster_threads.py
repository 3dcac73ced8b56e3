"""wsgroups.cluster.in_thread: database work off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from wsgroups.cluster import in_thread

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_the_function_runs_in_another_thread_with_the_callers_context_and_arguments():
    def work(a: int, *, b: int) -> tuple[str, str, int]:
        return threading.current_thread().name, request_id.get(), a + b

    async def main() -> tuple[str, str, int]:
        request_id.set("r-17")
        return await in_thread(work)(2, b=3)

    thread, seen, total = asyncio.run(main())
    assert thread != threading.current_thread().name
    assert (seen, total) == ("r-17", 5)


def test_an_exception_reaches_the_caller():
    def fails() -> None:
        raise LookupError("no such row")

    with pytest.raises(LookupError, match="no such row"):
        asyncio.run(in_thread(fails)())
