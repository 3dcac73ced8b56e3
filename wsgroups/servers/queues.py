"""A receive queue and a flag that cost next to nothing while a socket is idle.

daphne and uvicorn give each connection an ``asyncio.Queue`` for the events its ASGI
application receives, and uvicorn an ``asyncio.Event`` telling whether the client reads
what is written: the queue holds three deques and an ``Event`` of its own, each event a
deque of waiters, about 3.8 kB per connection before anything is queued. The server
adapters put these in their place: they allocate their storage when an item or a
waiter arrives and drop it once it is gone, so an idle socket holds two small objects.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Flag", "ReceiveQueue"]


def _wake_first(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
            return


def _enlist(waiters: list[asyncio.Future[None]] | None) -> tuple[list[asyncio.Future[None]], asyncio.Future[None]]:
    """A new waiter, appended to ``waiters`` (a new list if there is none yet); both."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if waiters is None:
        waiters = []
    waiters.append(waiter)
    return waiters, waiter


def _forget(waiters: list[asyncio.Future[None]] | None, waiter: asyncio.Future[None]) -> bool:
    """Remove ``waiter``; return whether the list is now empty."""
    if waiters is None:
        return True
    try:
        waiters.remove(waiter)
    except ValueError:
        pass
    return not waiters


class ReceiveQueue:
    """The part of ``asyncio.Queue`` a server uses for its application's events:
    unbounded, first in first out, ``put_nowait`` from the server, ``get`` from the
    application. A ``get`` cancelled after it was woken passes the wake-up on, so no item
    waits while a getter does."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        if self._getters:
            _wake_first(self._getters)

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            self._getters, waiter = _enlist(self._getters)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                woken = waiter.done() and not waiter.cancelled()
                if _forget(self._getters, waiter):
                    self._getters = None
                if woken and self._items and self._getters:
                    _wake_first(self._getters)
                raise
            if _forget(self._getters, waiter):
                self._getters = None
        return self.get_nowait()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class Flag:
    """The part of ``asyncio.Event`` a server uses for "the client's buffer has room":
    ``set``, ``clear``, ``is_set`` and ``wait``; its waiters' list exists only while
    something waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._set = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        self._waiters, waiter = _enlist(self._waiters)
        try:
            await waiter
        finally:
            if self._waiters is not None and _forget(self._waiters, waiter):
                self._waiters = None
        return True
