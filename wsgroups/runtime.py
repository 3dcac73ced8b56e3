"""The process-local side of wsgroups: live sockets of this process and their outboxes.

Each socket held by this process has a :class:`LocalSocket`. Sends from any thread
go into its bounded outbox; one pump task per busy socket drains the outbox into the
ASGI ``send`` callable, so frames leave in the order they were queued and an idle
socket costs no task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket as socket_module
import threading
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from .codes import CloseCode
from .conf import conf
from .ids import MAX_SEQUENCE, make_id

__all__ = ["LocalSocket", "Runtime", "get_runtime"]

logger = logging.getLogger("wsgroups")

T = TypeVar("T")

ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]

CONNECTING, OPEN, CLOSING, CLOSED = "connecting", "open", "closing", "closed"


class LocalSocket:
    """A socket held by this process."""

    __slots__ = (
        "_pumping",
        "_send",
        "closed",
        "group",
        "id",
        "loop",
        "outbox",
        "path",
        "runtime",
        "session_key",
        "state",
        "subprotocol",
    )

    def __init__(self, runtime: Runtime, socket_id: int, path: str, send: ASGISend) -> None:
        self.runtime = runtime
        self.id = socket_id
        self.path = path
        self.loop = runtime.loop
        self._send = send
        self.group = ""
        self.session_key: str | None = None
        self.subprotocol: str | None = None
        self.state = CONNECTING
        self.outbox: deque[dict[str, Any]] = deque()
        self._pumping = False
        #: Set once the socket is closed and its disconnect handler has finished.
        self.closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<LocalSocket {self.id} {self.group!r} {self.state}>"

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    # --- called from any thread -------------------------------------------------

    def submit(self, message: dict[str, Any]) -> bool:
        """Queue ``message`` for the wire from any thread; False if the socket no longer takes frames."""
        if self.state != OPEN:
            return False
        if self._on_loop():
            self.push(message)
        else:
            self.loop.call_soon_threadsafe(self.push, message)
        return True

    def submit_close(self, code: int, reason: str) -> bool:
        """Close from any thread; False if the socket was already closing."""
        if self.state != OPEN:
            return False
        if self._on_loop():
            self.close(code, reason)
        else:
            self.loop.call_soon_threadsafe(self.close, code, reason)
        return True

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    # --- called on the loop -----------------------------------------------------

    def push(self, message: dict[str, Any]) -> None:
        if self.state != OPEN:
            return
        if len(self.outbox) >= conf.OUTGOING_BUFFER:
            self.runtime.stats["outbox_overflows"] += 1
            logger.warning(
                "WebSocket %s: outgoing buffer of %d frames is full; closing with 1013",
                self.id,
                conf.OUTGOING_BUFFER,
            )
            self.outbox.clear()
            self.close(CloseCode.TRY_AGAIN_LATER, "outgoing buffer full: client too slow")
            return
        self.outbox.append(message)
        self._kick()

    def accept(self, message: dict[str, Any]) -> None:
        """Queue the 101; sends queued after it follow it on the wire."""
        self.state = OPEN
        self.outbox.appendleft(message)
        self._kick()

    def close(self, code: int, reason: str) -> None:
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.outbox.append({"type": "websocket.close", "code": int(code), "reason": reason})
        self._kick()

    def _kick(self) -> None:
        if not self._pumping:
            self._pumping = True
            self.loop.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while self.outbox:
                message = self.outbox.popleft()
                await self._send(message)
                if message["type"] == "websocket.close":
                    self.outbox.clear()
        except Exception as exc:  # the peer vanished under us; the receive loop sees the disconnect
            logger.debug("WebSocket %s: send failed: %r", self.id, exc)
            self.outbox.clear()
        finally:
            self._pumping = False


class Runtime:
    """Sockets of this process, ID allocation, handler threads and graceful shutdown."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets: dict[int, LocalSocket] = {}
        self.groups: dict[str, dict[int, LocalSocket]] = {}
        #: session key → ID of the session's most recently active socket here
        self.session_sockets: dict[str, int] = {}
        self.stats: dict[str, int] = {"outbox_overflows": 0, "opened": 0, "closed": 0}
        self.executor = ThreadPoolExecutor(max_workers=conf.HANDLER_THREADS, thread_name_prefix="wsgroups-handler")
        self._process_id: int | None = None
        self._block = 0
        self._sequence = MAX_SEQUENCE
        self._id_lock = asyncio.Lock()
        self.shutting_down = False
        self._previous_handlers: dict[int, Any] = {}

    # --- IDs ------------------------------------------------------------------

    async def next_id(self) -> int:
        async with self._id_lock:
            if self._sequence >= MAX_SEQUENCE:
                self._process_id, self._block = await sync_to_async(allocate_block, thread_sensitive=False)(
                    self._process_id
                )
                self._sequence = 0
            self._sequence += 1
            return make_id(self._block, self._sequence)

    def owns_block(self, block: int) -> bool:
        return block == self._block

    def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` on this runtime's loop, where the socket tables change, and return its result."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return func()

        async def call() -> T:
            return func()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    # --- registry -------------------------------------------------------------

    def add(self, sock: LocalSocket) -> None:
        self.sockets[sock.id] = sock
        self.groups.setdefault(sock.group, {})[sock.id] = sock
        if sock.session_key:
            self.session_sockets[sock.session_key] = sock.id
        self.stats["opened"] += 1

    def remove(self, sock: LocalSocket) -> None:
        if self.sockets.pop(sock.id, None) is None:
            return
        members = self.groups.get(sock.group)
        if members is not None:
            members.pop(sock.id, None)
            if not members:
                del self.groups[sock.group]
        if sock.session_key and self.session_sockets.get(sock.session_key) == sock.id:
            del self.session_sockets[sock.session_key]
        self.stats["closed"] += 1

    def touch_session(self, sock: LocalSocket) -> None:
        if sock.session_key:
            self.session_sockets[sock.session_key] = sock.id

    # --- shutdown -------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Close every socket with 1001 and run disconnect handlers before the server stops.

        The server's own SIGINT/SIGTERM handlers (daphne's reactor, uvicorn's) are
        chained: they run once our sockets are closed, or at once on a second signal.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.shutting_down:
            self._chain(signum, frame)
            return
        self.shutting_down = True
        task = self.loop.create_task(self.shutdown())
        task.add_done_callback(lambda _: self._chain(signum, None))

    def _chain(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
            signal.raise_signal(signum)

    async def shutdown(self) -> None:
        """Close all sockets with 1001 and wait (bounded) for their disconnect handlers."""
        self.shutting_down = True
        socks = list(self.sockets.values())
        for sock in socks:
            sock.close(CloseCode.GOING_AWAY, "server shutting down")
        if socks:
            waits = [asyncio.ensure_future(sock.closed.wait()) for sock in socks]
            _, pending = await asyncio.wait(waits, timeout=conf.SHUTDOWN_TIMEOUT)
            for waiter in pending:
                waiter.cancel()
            if pending:
                logger.warning("%d sockets did not finish closing within %.1fs", len(pending), conf.SHUTDOWN_TIMEOUT)
        logger.info("wsgroups: closed %d sockets for shutdown", len(socks))


def allocate_block(process_id: int | None) -> tuple[int, int]:
    """Return ``(process_id, block)``: a fresh ID block, registering the process first if needed."""
    from django.db import close_old_connections

    from .models import IdBlock, Process

    close_old_connections()
    try:
        if process_id is None:
            process_id = Process.objects.create(hostname=socket_module.gethostname(), pid=os.getpid()).pk
        return int(process_id), int(IdBlock.objects.create(process_id=process_id).pk)
    finally:
        close_old_connections()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The runtime of this process, created on the running loop at first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(asyncio.get_running_loop())
            _runtime.install_signal_handlers()
        return _runtime


def current_runtime() -> Runtime | None:
    """The runtime if this process holds (or held) sockets, without creating one."""
    return _runtime
