"""The server side of wsgroups in one process: its live sockets, their outboxes, and its
place in the cluster (registration, heartbeats, the registry, recovery of dead peers).

Each socket held here has a :class:`LocalSocket`. Sends from any thread go into its
bounded outbox; one pump task per busy socket drains the outbox into the ASGI ``send``
callable, so frames leave in the order they were queued and an idle socket costs no
task. Operations from other processes arrive through the :class:`~wsgroups.transport.Transport`
and are applied by :meth:`Runtime.apply_ops`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import FrameType
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed
from django.db import close_old_connections, transaction
from django.utils import timezone

from . import cluster
from .cluster import in_thread
from .codes import CloseCode, ConnectionFlags
from .conf import conf
from .handlers import Handler, handle
from .ids import MAX_SEQUENCE, make_id
from .limits import ConnectionCounter
from .transport import (
    OP_ALIVE,
    OP_BROADCAST,
    OP_CLOSE,
    OP_GROUP_CLOSE,
    OP_HANDLE,
    OP_MEMBERS,
    OP_REPLY,
    OP_SEND,
    WORKER_CHANNEL,
    Transport,
    make_layer,
)

__all__ = ["LIMIT_COUNTERS", "LocalSocket", "Runtime", "current_runtime", "get_runtime"]

logger = logging.getLogger("wsgroups")

T = TypeVar("T")

ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]

CONNECTING, OPEN, CLOSING, CLOSED = "connecting", "open", "closing", "closed"

#: The stats a process reports with its heartbeat (``Process.limit_events``): upgrades
#: refused at a connection limit or for a slow view, sockets closed for a full group, for
#: their message rate, or for not reading.
LIMIT_COUNTERS = ("refused_at_limit", "handshake_timeouts", "group_full", "rate_limited", "outbox_overflows")

#: The socket whose handler runs (``WebSocket.current``); holds a ``WebSocket``.
current_socket: contextvars.ContextVar[Any] = contextvars.ContextVar("wsgroups_current", default=None)


class LocalSocket:
    """A socket held by this process."""

    __slots__ = (
        "_pump_task",
        "_pumping",
        "_send",
        "abandoned",
        "app_task",
        "close_code",
        "close_reason",
        "closed",
        "group",
        "held",
        "id",
        "loop",
        "opened_at",
        "outbox",
        "path",
        "reaped",
        "remote_addr",
        "runtime",
        "session_key",
        "state",
        "subprotocol",
        "user_id",
    )

    def __init__(self, runtime: Runtime, socket_id: int, path: str, send: ASGISend, remote_addr: str = "") -> None:
        self.runtime = runtime
        self.id = socket_id
        self.path = path
        self.remote_addr = remote_addr
        self.loop = runtime.loop
        self._send = send
        self.group = ""
        self.session_key: str | None = None
        self.subprotocol: str | None = None
        self.user_id: int | None = None
        self.opened_at: datetime | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.state = CONNECTING
        self.outbox: deque[dict[str, Any]] = deque()
        #: True until the socket's registry row is written: the 101 and later frames wait.
        self.held = False
        self._pump_task: asyncio.Task[None] | None = None
        self._pumping = False
        #: The ASGI app task serving this socket, and whether it was told to give up on it.
        self.app_task: asyncio.Task[Any] | None = None
        self.abandoned = False
        #: Another process already ran this socket's disconnect handler (see _rejoin).
        self.reaped = False
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
        if len(self.outbox) >= self.runtime.outgoing_buffer:
            self._overflow()
            return
        self.outbox.append(message)
        self._kick()

    def _overflow(self) -> None:
        """The client does not keep up: drop its queue and close it with 1013, even if the
        server cannot write to it any more."""
        runtime = self.runtime
        runtime.stats["outbox_overflows"] += 1
        runtime.log_refusal(
            "WebSocket %s: outgoing buffer of %d frames full; closing with 1013", self.id, runtime.outgoing_buffer
        )
        self.outbox.clear()
        self.state = CLOSING
        self.close_code, self.close_reason = CloseCode.TRY_AGAIN_LATER, "outgoing buffer full: client too slow"
        if self._pump_task is not None:
            self._pump_task.cancel()  # it waits on a client that does not read
        self._pump_task = self.loop.create_task(self._force_close())

    async def _force_close(self) -> None:
        message = {"type": "websocket.close", "code": self.close_code, "reason": self.close_reason}
        try:
            async with asyncio.timeout(conf.CLOSE_TIMEOUT):
                await self._send(message)
        except Exception as exc:
            logger.debug("WebSocket %s: close frame not sent: %r", self.id, exc)
        await asyncio.sleep(conf.CLOSE_TIMEOUT)
        if not self.closed.is_set() and self.app_task is not None:
            # The server never reported the end of a connection we cannot write to: stop
            # serving it so its disconnect handler runs and its memory is freed.
            logger.warning("WebSocket %s: abandoned after %.1fs without a close", self.id, conf.CLOSE_TIMEOUT)
            self.abandoned = True
            self.app_task.cancel()

    def apply(self, message: dict[str, Any], flags: int) -> bool:
        """Send with :class:`ConnectionFlags` on the loop; False if the socket was not open."""
        if self.state != OPEN:
            return False
        if flags & ConnectionFlags.DISCONNECT_IMMEDIATELY:
            self.close(CloseCode.NORMAL, "")
            return True
        self.push(message)
        if flags & ConnectionFlags.DISCONNECT_AFTER_SEND:
            self.close(CloseCode.NORMAL, "")
        return True

    def accept(self, message: dict[str, Any], held: bool = False) -> None:
        """Queue the 101; sends queued after it follow it on the wire.

        A ``held`` socket sends nothing until :meth:`release`: the runtime holds each new
        socket until its registry row is written, so a client never learns an ID that a
        crash of this process could leave without its disconnect handler.
        """
        self.state = OPEN
        self.held = held
        self.opened_at = timezone.now()
        self.outbox.appendleft(message)
        self._kick()

    def release(self) -> None:
        self.held = False
        self._kick()

    def close(self, code: int, reason: str) -> None:
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.close_code, self.close_reason = int(code), reason
        self.outbox.append({"type": "websocket.close", "code": int(code), "reason": reason})
        self._kick()

    def _kick(self) -> None:
        if self._pump_task is None and not self._pumping and not self.held:
            self._drain()

    def _drain(self) -> None:
        """Hand queued frames to the server in order.

        The server's ``send`` coroutine is driven by hand: it normally finishes without
        waiting, so a frame costs no task. Only when the server makes it wait (its write
        buffer is full) does the rest continue in a task.
        """
        self._pumping = True
        try:
            stats = self.runtime.stats
            while self.outbox:
                message = self.outbox.popleft()
                stats["frames_out"] += 1
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


def _frame(payload: str | bytes) -> dict[str, Any]:
    if isinstance(payload, str):
        return {"type": "websocket.send", "text": payload}
    return {"type": "websocket.send", "bytes": payload}


def _run_sync(func: Callable[..., Any], *args: Any) -> Any:
    close_old_connections()
    try:
        return func(*args)
    finally:
        close_old_connections()


class Runtime:
    """Sockets of this process, its ID blocks, handler threads, cluster duties and shutdown."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets: dict[int, LocalSocket] = {}
        self.groups: dict[str, dict[int, LocalSocket]] = {}
        #: session key → ID of the session's most recently active socket here
        self.session_sockets: dict[str, int] = {}
        self.stats: dict[str, int] = {
            "outbox_overflows": 0,
            "opened": 0,
            "closed": 0,
            "sends_to_dead": 0,
            "reaped": 0,
            "frames_in": 0,
            "frames_out": 0,
            "refused_at_limit": 0,
            "group_full": 0,
            "rate_limited": 0,
            "handshake_timeouts": 0,
        }
        #: Connections of this process, handshakes in progress included, by client address.
        self.connections = ConnectionCounter()
        self._refusals_logged_at = -1e9
        self._refusals_unlogged = 0
        self.executor = ThreadPoolExecutor(max_workers=conf.HANDLER_THREADS, thread_name_prefix="wsgroups-handler")
        self.upgrade_executor = ThreadPoolExecutor(
            max_workers=conf.HANDLER_THREADS, thread_name_prefix="wsgroups-upgrade"
        )
        self.read_settings()
        setting_changed.connect(self._setting_changed)
        self.transport: Transport | None = None
        self.process_id: int | None = None
        self.kind = "server"
        self._background: set[asyncio.Task[Any]] = set()
        self._block = 0
        self._own_blocks: set[int] = set()
        self._sequence = MAX_SEQUENCE
        self._id_lock = asyncio.Lock()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._registry_open: list[LocalSocket] = []
        self._registry_closed: list[LocalSocket] = []
        self._registry_wakeup = asyncio.Event()
        self.shutting_down = False
        self._previous_handlers: dict[int, Any] = {}

    def read_settings(self) -> None:
        """Copy the settings read per frame into attributes (``conf`` reads Django settings)."""
        self.outgoing_buffer = conf.OUTGOING_BUFFER
        self.max_message_size = conf.MAX_MESSAGE_SIZE
        self.handler_mode = conf.HANDLER_MODE
        self.max_connections = conf.MAX_CONNECTIONS
        self.max_connections_per_client = conf.MAX_CONNECTIONS_PER_CLIENT
        self.max_connections_per_group = conf.MAX_CONNECTIONS_PER_GROUP
        self.message_rate = conf.MESSAGE_RATE
        self.message_burst = conf.MESSAGE_BURST
        self.handshake_timeout = conf.HANDSHAKE_TIMEOUT

    def log_refusal(self, message: str, *args: Any) -> None:
        """Log a connection refused or closed by a limit, at most one line per 10 s: a flood
        must not flood the log."""
        now = self.loop.time()
        if now - self._refusals_logged_at < 10:
            self._refusals_unlogged += 1
            return
        suppressed, self._refusals_unlogged = self._refusals_unlogged, 0
        self._refusals_logged_at = now
        if suppressed:
            message += f" ({suppressed} more refusals in the last 10 s not logged)"
        logger.warning(message, *args)

    def _setting_changed(self, setting: str, **kwargs: Any) -> None:
        if setting == "WSGROUPS":
            self.read_settings()

    # --- start -------------------------------------------------------------------

    async def start(self, kind: str = "server") -> None:
        """Join the cluster once as a ``kind`` process ("server" or "worker"): channel,
        process row, heartbeats, registry writes."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            from django.conf import settings

            channel_name = ""
            if conf.CHANNEL_LAYER in (getattr(settings, "CHANNEL_LAYERS", None) or {}):
                directory = cluster.Directory()
                self.transport = Transport(self.loop, make_layer(conf.CHANNEL_LAYER), directory)
                self.transport.on_ops = self.apply_ops
                await self.transport.start()
                channel_name = self.transport.channel_name
            else:
                logger.warning(
                    "wsgroups: no channel layer %r; sockets are reachable only in-process", conf.CHANNEL_LAYER
                )
            self.kind = kind
            self.process_id = await in_thread(cluster.register_process)(kind, channel_name)
            self._tasks.append(self.loop.create_task(self._heartbeat_loop()))
            self._tasks.append(self.loop.create_task(self._registry_loop()))
            self._started = True

    # --- IDs ------------------------------------------------------------------

    async def next_id(self) -> int:
        await self.start()
        async with self._id_lock:
            if self._sequence >= MAX_SEQUENCE:
                assert self.process_id is not None
                self._block = await in_thread(cluster.allocate_block)(self.process_id)
                self._own_blocks.add(self._block)
                self._sequence = 0
            self._sequence += 1
            return make_id(self._block, self._sequence)

    def owns_block(self, block: int) -> bool:
        return block in self._own_blocks

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
        self._registry_open.append(sock)
        self._registry_wakeup.set()

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
        self._registry_closed.append(sock)
        self._registry_wakeup.set()

    def touch_session(self, sock: LocalSocket) -> None:
        if sock.session_key:
            self.session_sockets[sock.session_key] = sock.id

    def members(self, group: str) -> list[LocalSocket]:
        return [sock for sock in self.groups.get(group, {}).values() if sock.is_open]

    # --- operations from any process ----------------------------------------------

    def broadcast_local(self, group: str, payload: str | bytes, excluded: set[int]) -> int:
        message = _frame(payload)
        count = 0
        for sock in self.members(group):
            if sock.id not in excluded:
                sock.push(message)
                count += 1
        return count

    def close_group_local(self, group: str, code: int, reason: str) -> int:
        members = self.members(group)
        for sock in members:
            sock.close(code, reason)
        return len(members)

    async def apply_ops(self, ops: list[list[Any]], reply_to: str) -> list[list[Any]]:
        """Apply a batch from another process (see :mod:`wsgroups.transport`); return answers."""
        results: list[list[Any]] = []
        sockets = self.sockets
        for op in ops:
            kind = op[0]
            if kind == OP_SEND:
                sock = sockets.get(op[1])
                if sock is None or not sock.apply(_frame(op[2]), op[3]):
                    self.stats["sends_to_dead"] += 1
            elif kind == OP_CLOSE:
                sock = sockets.get(op[1])
                if sock is not None:
                    sock.close(op[2], op[3])
            elif kind == OP_BROADCAST:
                results.append([op[4], self.broadcast_local(op[1], op[2], set(op[3]))])
            elif kind == OP_GROUP_CLOSE:
                results.append([op[4], self.close_group_local(op[1], op[2], op[3])])
            elif kind == OP_ALIVE:
                results.append([op[2], [i for i in op[1] if (s := sockets.get(i)) is not None and s.is_open]])
            elif kind == OP_MEMBERS:
                results.append([op[2], [sock.id for sock in self.members(op[1])]])
            elif kind == OP_HANDLE:
                _, group, handler_kind, socket_id, payload, session_key, token = op
                task = self.loop.create_task(
                    self._handle_for_server(group, handler_kind, socket_id, payload, session_key, token, reply_to)
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                logger.error("wsgroups: unknown operation %r from another process", kind)
        return results

    # --- handlers -------------------------------------------------------------

    async def call_handler(self, handler: Handler, group: str, kind: str, ws: Any, *args: Any) -> bool:
        """Run ``handler`` (``group``'s ``kind`` handler: "text", "binary" or "disconnect") for
        ``ws``: here, or on a ``runworker wsgroups`` process when ``HANDLER_MODE`` is "worker".
        Returns False if it raised."""
        if self.handler_mode == "worker" and self.transport is not None and self.kind == "server":
            return await self._call_on_worker(group, kind, ws, *args)
        return await self.run_handler(handler, ws, *args)

    async def _call_on_worker(self, group: str, kind: str, ws: Any, *args: Any) -> bool:
        """Hand the call to a worker and wait for it: the socket's next frame waits too, so
        calls for one socket stay one at a time and in order, whichever worker takes them."""
        assert self.transport is not None
        transport = self.transport
        token, future = transport.future()
        session_key = ws.session_key_hint()
        transport.submit(WORKER_CHANNEL, [OP_HANDLE, group, kind, ws.id, args[0] if args else None, session_key, token])
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=conf.QUERY_TIMEOUT)
                if done:
                    return bool(future.result())
                workers = [p for p in (await transport.directory.live()).values() if p.kind == "worker"]
                if not workers:
                    logger.error("wsgroups: HANDLER_MODE is 'worker' but no 'runworker wsgroups' process is alive")
                    return False
        finally:
            transport.discard(token)

    async def _handle_for_server(
        self, group: str, kind: str, socket_id: int, payload: Any, session_key: str | None, token: int, reply_to: str
    ) -> None:
        """In a worker: run a handler a server asked for, then answer behind its sends."""
        from .websocket import WebSocket

        if self.transport is not None and not await self.transport.claim(f"{reply_to}:{token}"):
            return  # a second delivery of a call another worker took

        ws = WebSocket.restore(socket_id, group, session_key)
        args = () if kind == "disconnect" else (payload,)
        handler = (
            handle.disconnect_handler(group) if kind == "disconnect" else handle.resolve(group, kind == "text").handler
        )
        ok = handler is None or await self.call_handler(handler, group, kind, ws, *args)
        if self.transport is not None and reply_to:
            self.transport.submit(reply_to, [OP_REPLY, token, ok])

    async def run_handler(self, handler: Handler, ws: Any, *args: Any) -> bool:
        """Run one handler with ``WebSocket.current`` set; log and return False if it raised."""
        token = current_socket.set(ws)
        try:
            if handler.is_async:
                await handler.func(*args, ws)
            else:
                await sync_to_async(_run_sync, thread_sensitive=False, executor=self.executor)(handler.func, *args, ws)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "Handler %s.%s failed on WebSocket %s", handler.func.__module__, handler.func.__qualname__, ws.id
            )
            return False
        finally:
            current_socket.reset(token)

    # --- background duties ----------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Heartbeat, reap dead processes (running their sockets' disconnect handlers), prune."""
        assert self.process_id is not None
        pruned_at = 0.0
        counted_at, frames_in, frames_out = self.loop.time(), 0, 0
        while True:
            await asyncio.sleep(conf.HEARTBEAT_INTERVAL)
            try:
                now = self.loop.time()
                elapsed = max(now - counted_at, 1e-6)
                rates = (
                    (self.stats["frames_in"] - frames_in) / elapsed,
                    (self.stats["frames_out"] - frames_out) / elapsed,
                )
                counted_at, frames_in, frames_out = now, self.stats["frames_in"], self.stats["frames_out"]
                limit_events = {name: self.stats[name] for name in LIMIT_COUNTERS if self.stats[name]}
                if not await in_thread(cluster.heartbeat)(self.process_id, *rates, limit_events):
                    await self._rejoin()
                for socket_id, group, session_key in await in_thread(cluster.reap_dead_processes)(self.process_id):
                    await self._reaped_disconnect(socket_id, group, session_key)
                if self.loop.time() - pruned_at > 60:
                    pruned_at = self.loop.time()
                    await in_thread(cluster.prune_closed_connections)()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("wsgroups: heartbeat failed")

    async def _rejoin(self) -> None:
        """Another process took this one for dead (its heartbeats stalled) and reaped its
        sockets. Keep the cluster's verdict true: close those sockets without running their
        disconnect handlers again, and come back as a new process with new ID blocks."""
        logger.error(
            "wsgroups: process #%s was declared dead after %.0fs without a heartbeat; closing its %d sockets "
            "and rejoining",
            self.process_id,
            conf.PROCESS_TIMEOUT,
            len(self.sockets),
        )
        for sock in list(self.sockets.values()):
            sock.reaped = True
            sock.close(CloseCode.TRY_AGAIN_LATER, "server lost contact with its cluster; reconnect")
        channel_name = self.transport.channel_name if self.transport is not None else ""
        async with self._id_lock:
            self.process_id = await in_thread(cluster.register_process)(self.kind, channel_name)
            self._sequence = MAX_SEQUENCE

    async def _reaped_disconnect(self, socket_id: int, group: str, session_key: str) -> None:
        from .websocket import WebSocket

        self.stats["reaped"] += 1
        handler = handle.disconnect_handler(group)
        if handler is not None:
            await self.call_handler(
                handler, group, "disconnect", WebSocket.restore(socket_id, group, session_key or None)
            )

    async def _registry_loop(self) -> None:
        while True:
            await self._registry_wakeup.wait()
            await asyncio.sleep(conf.REGISTRY_INTERVAL)  # let a burst of opens share one write
            self._registry_wakeup.clear()
            await self.flush_registry()

    async def flush_registry(self) -> None:
        """Write pending registry rows, then let the sockets they announce speak."""
        opened, self._registry_open = self._registry_open, []
        closed, self._registry_closed = self._registry_closed, []
        if not opened and not closed:
            return
        assert self.process_id is not None
        try:
            await in_thread(_write_registry)(self.process_id, opened, closed)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Serving beats recording: the sockets go ahead, but a crash could not be recovered.
            logger.exception("wsgroups: writing the socket registry failed for %d sockets", len(opened) + len(closed))
        finally:
            for sock in opened:
                sock.release()

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
        """Close all sockets with 1001, wait (bounded) for their disconnect handlers, leave the cluster."""
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
        for task in self._tasks:
            task.cancel()
        if self._started:
            try:
                await self.flush_registry()
                assert self.process_id is not None
                await in_thread(cluster.stop_process)(self.process_id)
            except Exception:
                logger.exception("wsgroups: could not record the shutdown in the database")
            if self.transport is not None:
                await self.transport.stop()
        logger.info("wsgroups: closed %d sockets for shutdown", len(socks))


def _write_registry(process_id: int, opened: list[LocalSocket], closed: list[LocalSocket]) -> None:
    with transaction.atomic():
        _write_registry_rows(process_id, opened, closed)


def _write_registry_rows(process_id: int, opened: list[LocalSocket], closed: list[LocalSocket]) -> None:
    from .models import Connection

    closed_ids = {sock.id for sock in closed}
    now = timezone.now()
    rows = []
    for sock in opened:
        row = Connection(
            id=sock.id,
            group=sock.group,
            path=sock.path[:2048],
            state=Connection.State.OPEN,
            opened_at=sock.opened_at or now,
            session_key=sock.session_key or "",
            user_id=sock.user_id,
            remote_addr=sock.remote_addr,
            subprotocol=sock.subprotocol or "",
            process_id=process_id,
        )
        if sock.id in closed_ids:
            row.state, row.closed_at = Connection.State.CLOSED, now
            row.close_code, row.close_reason = sock.close_code, sock.close_reason[:255]
        rows.append(row)
    if rows:
        Connection.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    # Closes share a few (code, reason) pairs: one UPDATE per pair, not a CASE per row.
    opened_ids = {sock.id for sock in opened}
    by_outcome: dict[tuple[int | None, str], list[int]] = {}
    for sock in closed:
        if sock.id not in opened_ids:
            by_outcome.setdefault((sock.close_code, sock.close_reason[:255]), []).append(sock.id)
    for (code, reason), ids in by_outcome.items():
        for start in range(0, len(ids), 500):
            Connection.objects.filter(pk__in=ids[start : start + 500]).update(
                state=Connection.State.CLOSED, closed_at=now, close_code=code, close_reason=reason
            )


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
