"""A cluster member on a private thread, for a process whose own work is synchronous.

``manage.py wsbroadcast`` ticks in its main thread with blocking database calls; a
:class:`BackgroundMember` gives it the process's :class:`~wsgroups.runtime.Runtime` on an
event loop of its own, joined to the cluster from the start: it heartbeats, reaps dead
processes (running their sockets' disconnect handlers exactly once, like any member),
answers other processes' queries, and is the transport the main thread's sends use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

from .membership import join
from .runtime import Runtime, get_runtime

__all__ = ["BackgroundMember"]

logger = logging.getLogger("wsgroups")

#: Seconds to wait for the member to join (database and channel layer) or to leave.
START_TIMEOUT = 30.0


class BackgroundMember:
    """This process's runtime, as a ``kind`` member of the cluster, on a daemon thread."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the background member has not started (start())")
        return self._runtime

    @property
    def process_id(self) -> int:
        """This process's number in the registry (a new one after being declared dead)."""
        process_id = self.runtime.process_id
        assert process_id is not None
        return process_id

    def start(self, timeout: float = START_TIMEOUT) -> Runtime:
        """Start the thread and join the cluster; raise what joining raised."""
        joined = concurrent.futures.Future[Runtime]()

        async def boot() -> None:
            try:
                runtime = get_runtime()
                await join(runtime, kind=self.kind)
            except BaseException as exc:
                joined.set_exception(exc)
                raise
            joined.set_result(runtime)

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(boot())
            except BaseException:
                return
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"wsgroups-{self.kind}", daemon=True)
        self._thread.start()
        self._runtime = joined.result(timeout)
        return self._runtime

    def stop(self, timeout: float = START_TIMEOUT) -> None:
        """Leave the cluster (the process is recorded as stopped) and end the thread."""
        if self._thread is None or not self._thread.is_alive():
            return
        if self._runtime is not None:
            future = asyncio.run_coroutine_threadsafe(self._runtime.leave(), self.loop)
            try:
                future.result(timeout)
            except Exception:
                logger.exception("wsgroups: the %s could not leave the cluster cleanly", self.kind)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
