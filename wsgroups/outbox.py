"""A socket held by this process and its outbox: the bounded queue of frames for the client.

Sends from any thread land in the socket's outbox on the server's event loop. The
outbox hands frames to the server's ASGI ``send`` in order, driving that coroutine by
hand: it normally finishes without waiting, so a frame costs no task, and only when the
server makes it wait (its write buffer is full) does the rest continue in a task. A
client that stops reading fills the outbox; at its limit the socket is closed with 1013
and the ``on_overflow`` callback is told, so the event is logged and counted.

The outbox needs only its limit, a counters dict (``frames_out``: messages handed to the
server, not the 101 or the close) and that callback:
the process's socket tables, IDs and cluster duties live elsewhere.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from datetime import datetime
from typing import Any, cast

from django.utils import timezone

from .codes import CloseCode, Closing, ConnectionFlags, close_for
from .conf import conf

__all__ = ["ASGISend", "LocalSocket", "SocketState"]

logger = logging.getLogger("wsgroups")

ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class SocketState(enum.Enum):
    """Where a socket is in its life; only an OPEN socket takes frames."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class LocalSocket:
    """A socket held by this process: what the registry records of it, and its outbox."""

    __slots__ = (
        "_pump_task",
        "_pumping",
        "_send",
        "abandoned",
        "app_task",
        "close_code",
        "close_reason",
        "closed",
        "counters",
        "group",
        "held",
        "id",
        "limit",
        "loop",
        "on_overflow",
        "opened_at",
        "outbox",
        "path",
        "reaped",
        "remote_addr",
        "session_key",
        "state",
        "subprotocol",
        "user_id",
    )

    def __init__(
        self,
        socket_id: int,
        path: str,
        send: ASGISend,
        loop: asyncio.AbstractEventLoop,
        *,
        limit: int,
        counters: dict[str, int],
        on_overflow: Callable[[LocalSocket], None],
        remote_addr: str = "",
    ) -> None:
        self.id = socket_id
        self.path = path
        self.remote_addr = remote_addr
        self.loop = loop
        self._send = send
        self.limit = limit
        self.counters = counters
        self.on_overflow = on_overflow
        self.group = ""
        self.session_key: str | None = None
        self.subprotocol: str | None = None
        #: The primary key of the user who upgraded (any pk type), or None.
        self.user_id: Any = None
        self.opened_at: datetime | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.state = SocketState.CONNECTING
        self.outbox: deque[dict[str, Any]] = deque()
        #: True until the socket's registry row is written: the 101 and later frames wait.
        self.held = False
        self._pump_task: asyncio.Task[None] | None = None
        self._pumping = False
        #: The ASGI app task serving this socket, and whether it was told to give up on it.
        self.app_task: asyncio.Task[Any] | None = None
        self.abandoned = False
        #: Another process already ran this socket's disconnect handler (it took this
        #: process for dead); the handler must not run again here.
        self.reaped = False
        #: Set once the socket is closed and its disconnect handler has finished.
        self.closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<LocalSocket {self.id} {self.group!r} {self.state.value}>"

    @property
    def is_open(self) -> bool:
        return self.state is SocketState.OPEN

    def on_loop(self) -> bool:
        """Whether the caller runs on the loop that serves this socket."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    # --- from any thread ------------------------------------------------------------

    def send_threadsafe(self, message: dict[str, Any], flags: int) -> bool:
        """:meth:`send` from any thread; False if the socket no longer takes frames."""
        if self.state is not SocketState.OPEN:
            return False
        if self.on_loop():
            return self.send(message, flags)
        self.loop.call_soon_threadsafe(self.send, message, flags)
        return True

    def close_threadsafe(self, code: int, reason: str) -> bool:
        """:meth:`close` from any thread; False if the socket was already closing."""
        if self.state is not SocketState.OPEN:
            return False
        if self.on_loop():
            self.close(code, reason)
        else:
            self.loop.call_soon_threadsafe(self.close, code, reason)
        return True

    # --- on the loop ------------------------------------------------------------------

    def send(self, message: dict[str, Any], flags: int = 0) -> bool:
        """Queue ``message`` honouring :class:`ConnectionFlags`; False if the socket was not open."""
        if self.state is not SocketState.OPEN:
            return False
        if flags & ConnectionFlags.DISCONNECT_IMMEDIATELY:
            self.close(CloseCode.NORMAL, "")
            return True
        self.enqueue(message)
        if flags & ConnectionFlags.DISCONNECT_AFTER_SEND:
            self.close(CloseCode.NORMAL, "")
        return True

    def enqueue(self, message: dict[str, Any]) -> None:
        """Queue one ASGI message behind the others; overflow closes the socket."""
        if self.state is not SocketState.OPEN:
            return
        if len(self.outbox) >= self.limit:
            self._overflow()
            return
        self.outbox.append(message)
        self._kick()

    def accept(self, message: dict[str, Any], held: bool = False) -> None:
        """Queue the 101 first; sends queued after it follow it on the wire.

        A ``held`` socket sends nothing until :meth:`release`: each new socket is held
        until its registry row is written, so a client never learns an ID that a crash of
        this process could leave without its disconnect handler.
        """
        self.state = SocketState.OPEN
        self.held = held
        self.opened_at = timezone.now()
        self.outbox.appendleft(message)
        self._kick()

    def release(self) -> None:
        self.held = False
        self._kick()

    def close(self, code: int, reason: str) -> None:
        """Queue the close frame behind the frames already queued."""
        if self.state is not SocketState.OPEN:
            return
        self.state = SocketState.CLOSING
        self.close_code, self.close_reason = int(code), reason
        self.outbox.append({"type": "websocket.close", "code": int(code), "reason": reason})
        self._kick()

    def _overflow(self) -> None:
        """The client does not keep up: drop its queue and close it with 1013, even if the
        server cannot write to it any more."""
        self.outbox.clear()
        self.state = SocketState.CLOSING
        self.close_code, self.close_reason = close_for(Closing.OUTBOX_OVERFLOW)
        self.on_overflow(self)
        if self._pump_task is not None:
            self._pump_task.cancel()  # it waits on a client that does not read
        self._pump_task = self.loop.create_task(self._force_close())

    async def _force_close(self) -> None:
        message = {"type": "websocket.close", "code": self.close_code, "reason": self.close_reason}
        try:
            await asyncio.wait_for(self._send(message), conf.CLOSE_TIMEOUT)
        except Exception as exc:
            logger.debug("WebSocket %s: close frame not sent: %r", self.id, exc)
        await asyncio.sleep(conf.CLOSE_TIMEOUT)
        if not self.closed.is_set() and self.app_task is not None:
            # The server never reported the end of a connection we cannot write to: stop
            # serving it so its disconnect handler runs and its memory is freed.
            logger.warning("WebSocket %s: abandoned after %.1fs without a close", self.id, conf.CLOSE_TIMEOUT)
            self.abandoned = True
            self.app_task.cancel()

    def _kick(self) -> None:
        if self._pump_task is None and not self._pumping and not self.held:
            self._drain()

    def _drain(self) -> None:
        """Hand queued frames to the server in order, driving its ``send`` by hand."""
        self._pumping = True
        try:
            counters = self.counters
            while self.outbox:
                message = self.outbox.popleft()
                if message["type"] == "websocket.send":  # data frames, not the 101 or the close
                    counters["frames_out"] += 1
                coroutine = cast("Coroutine[Any, Any, None]", self._send(message))
                try:
                    waiting = coroutine.send(None)
                except StopIteration:
                    if message["type"] == "websocket.close":
                        self.outbox.clear()
                    continue
                except Exception as exc:  # the peer vanished; the receive loop sees the disconnect
                    logger.debug("WebSocket %s: send failed: %r", self.id, exc)
                    self.outbox.clear()
                    return
                self._pump_task = self.loop.create_task(self._resume(coroutine, waiting, message))
                return
        finally:
            self._pumping = False

    async def _resume(self, coroutine: Coroutine[Any, Any, None], waiting: Any, message: dict[str, Any]) -> None:
        """Finish a ``send`` that had to wait, then go on draining."""
        try:
            while True:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    # The coroutine already marked the future as awaited; we await it on its behalf.
                    waiting._asyncio_future_blocking = False
                    try:
                        await waiting
                    except Exception:  # the coroutine sees the outcome when resumed
                        pass
                try:
                    waiting = coroutine.send(None)
                except StopIteration:
                    break
            if message["type"] == "websocket.close":
                self.outbox.clear()
        except asyncio.CancelledError:
            coroutine.close()
            raise
        except Exception as exc:
            logger.debug("WebSocket %s: send failed: %r", self.id, exc)
            self.outbox.clear()
            return
        finally:
            if self._pump_task is asyncio.current_task():
                self._pump_task = None
        self._kick()
