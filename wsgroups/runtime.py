"""wsgroups in one process: its sockets, its IDs, its counters and its link to the cluster.

A server process has one :class:`Runtime`, bound to the server's event loop and created
at its first WebSocket scope. It holds the :class:`~wsgroups.socket_table.SocketTable`
and the :class:`~wsgroups.room_table.RoomTable`,
allocates IDs from blocks the database hands it, batches registry writes, and owns the
process's :class:`~wsgroups.transport.Transport`. What it does with operations from
other processes, and its cluster duties (heartbeats, reaping), are given to
:meth:`Runtime.start` by the layers above (:mod:`wsgroups.membership`).

Processes without sockets (a shell, a view under WSGI, ``wsbroadcast``, a task worker)
have no runtime; :func:`get_transport` gives them a transport on a private thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from . import cluster
from .cluster import Directory, in_thread
from .conf import conf
from .ids import MAX_SEQUENCE, make_id
from .layers import make_layer
from .limits import ConnectionCounter, RefusalLog
from .metrics import HandlerTimes, snapshot
from .outbox import ASGISend, LocalSocket
from .room_table import RoomTable
from .socket_table import SocketTable
from .transport import OpsHandler, Transport

__all__ = [
    "LIMIT_COUNTERS",
    "REFUSAL_COUNTERS",
    "Runtime",
    "at_exit",
    "cluster_transport",
    "current_runtime",
    "forget_runtime",
    "get_runtime",
    "get_transport",
]

logger = logging.getLogger("wsgroups")

T = TypeVar("T")

#: The counts a process reports with its heartbeat (``Process.limit_events``): upgrades
#: refused at a connection limit or for a slow view, sockets closed for a full group, for
#: their message rate, or for not reading.
LIMIT_COUNTERS = ("refused_at_limit", "handshake_timeouts", "group_full", "rate_limited", "outbox_overflows")
#: Upgrades refused for their origin or because the server is stopping, and upgrades the
#: view answered with a response of its own (counted for monitoring, not limits).
REFUSAL_COUNTERS = ("origin_refused", "shutdown_refused", "view_rejected")
_COUNTERS = (
    "opened",
    "closed",
    "sends_to_dead",
    "reaped",
    "frames_in",
    "frames_out",
    *LIMIT_COUNTERS,
    *REFUSAL_COUNTERS,
)

#: A cluster duty: a coroutine function run as a task for as long as the process is in the cluster.
Duty = Callable[["Runtime"], Coroutine[Any, Any, None]]


class _Raised:
    """What :meth:`Runtime.run_on_loop` got when the function raised, to raise it in the caller."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Runtime:
    """Sockets of this process, its ID blocks, handler threads and place in the cluster."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.table = SocketTable(self.stats)
        #: The rooms its sockets are in (in memory; the registry gets each socket's list in
        #: its batches, for the disconnect handlers the reaper runs if this process dies).
        self.rooms = RoomTable(on_change=self._rooms_changed)
        #: Sockets of this process that ended, by close code.
        self.closes: dict[int, int] = {}
        #: How long handler calls run here.
        self.handler_times = HandlerTimes()
        #: Connections of this process, handshakes in progress included, by client address.
        self.connections = ConnectionCounter()
        self.executor = ThreadPoolExecutor(max_workers=conf.HANDLER_THREADS, thread_name_prefix="wsgroups-handler")
        self.upgrade_executor = ThreadPoolExecutor(conf.HANDLER_THREADS, thread_name_prefix="wsgroups-upgrade")
        self.transport: Transport | None = None
        self.directory = Directory()
        self.process_id: int | None = None
        self.kind = "server"
        self.shutting_down = False
        self.signals_installed = False
        self._refusals = RefusalLog(logger, lambda: self.loop.time())
        self._block = 0
        self._own_blocks: set[int] = set()
        self._sequence = MAX_SEQUENCE
        self._id_lock = asyncio.Lock()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._registry_task: asyncio.Task[None] | None = None
        self._duties: list[asyncio.Task[None]] = []
        self._registry_opened: list[LocalSocket] = []
        self._registry_closed: list[LocalSocket] = []
        self._registry_wakeup = asyncio.Event()
        self._registry_lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._started

    def count_close(self, code: int) -> None:
        self.closes[code] = self.closes.get(code, 0) + 1

    def metrics_snapshot(self) -> dict[str, Any]:
        """This process's counters as its heartbeat writes them (``Process.metrics``)."""
        layer_errors = self.transport.stats["layer_errors"] if self.transport is not None else 0
        return snapshot(self.stats, self.closes, layer_errors, self.handler_times)

    def log_refusal(self, message: str, *args: Any) -> None:
        """Log a connection refused or closed by a limit, at most one line per 10 s."""
        self._refusals.warning(message, *args)

    # --- joining the cluster ----------------------------------------------------------

    async def start(self, kind: str, on_ops: OpsHandler, duties: Iterable[Duty] = ()) -> None:
        """Join the cluster once as a ``kind`` process ("server" or "worker"): channel,
        process row, registry writes, and ``duties`` as tasks; ``on_ops`` applies the
        operations other processes send here."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            channel_name = ""
            if conf.has_channel_layer():
                self.transport = Transport(self.loop, make_layer(conf.CHANNEL_LAYER), self.directory)
                self.transport.on_ops = on_ops
                await self.transport.start()
                channel_name = self.transport.channel_name
            else:
                logger.warning(
                    "wsgroups: no channel layer %r; sockets are reachable only in-process", conf.CHANNEL_LAYER
                )
            self.kind = kind
            self.process_id = await in_thread(cluster.register_process)(kind, channel_name)
            self._registry_task = self.loop.create_task(self._registry_loop())
            self._duties = [self.loop.create_task(duty(self)) for duty in duties]
            self._started = True

    async def rejoin(self) -> None:
        """Come back as a new process with new ID blocks (after being declared dead)."""
        channel_name = self.transport.channel_name if self.transport is not None else ""
        async with self._id_lock:
            self.process_id = await in_thread(cluster.register_process)(self.kind, channel_name)
            self._sequence = MAX_SEQUENCE

    async def leave(self, *, stopped: bool = True) -> None:
        """Stop the duties, write the registry, record the stop (not if ``stopped`` is False:
        a live process reaps this one later) and close the transport."""
        for task in self._duties:
            task.cancel()  # first: a heartbeat after the stop would rejoin
        if self._started:
            try:
                await self.flush_registry()  # after any write in flight: nothing is left out
                assert self.process_id is not None
                if stopped:
                    await in_thread(cluster.stop_process)(self.process_id)
            except Exception:
                logger.exception("wsgroups: could not record the shutdown in the database")
        if self._registry_task is not None:
            self._registry_task.cancel()
        if self._started and self.transport is not None:
            await self.transport.stop()

    # --- sockets and IDs ----------------------------------------------------------------

    async def new_socket(self, path: str, send: ASGISend, remote_addr: str) -> LocalSocket:
        """A socket with a fresh ID (call :meth:`start` first)."""
        return LocalSocket(
            await self.next_id(),
            path,
            send,
            self.loop,
            limit=conf.OUTGOING_BUFFER,
            counters=self.stats,
            on_overflow=self._overflowed,
            remote_addr=remote_addr,
        )

    def _overflowed(self, sock: LocalSocket) -> None:
        self.stats["outbox_overflows"] += 1
        self.log_refusal("WebSocket %s: outgoing buffer of %d frames full; closing with 1013", sock.id, sock.limit)

    async def next_id(self) -> int:
        async with self._id_lock:
            if self._sequence >= MAX_SEQUENCE:
                if self.process_id is None:
                    raise RuntimeError("the runtime allocates IDs only once it has joined the cluster (start())")
                self._block = await in_thread(cluster.allocate_block)(self.process_id)
                self._own_blocks.add(self._block)
                self._sequence = 0
            self._sequence += 1
            return make_id(self._block, self._sequence)

    def owns_block(self, block: int) -> bool:
        """Whether this process allocated ID block ``block`` (so no other process holds its IDs)."""
        return block in self._own_blocks

    def run_on_loop(self, func: Callable[[], T]) -> T:
        """Run ``func`` on this runtime's loop, where the socket table changes, and return its result."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return func()
        # One callback and one lock: this is on every upgrade's path (send_upgrade), where
        # a task and two chained futures per call cost more than the call itself.
        done = threading.Lock()
        done.acquire()
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(func())
            except BaseException as exc:
                outcome.append(_Raised(exc))
            finally:
                done.release()

        self.loop.call_soon_threadsafe(call)
        done.acquire()
        result = outcome[0]
        if isinstance(result, _Raised):
            raise result.exc
        return result  # type: ignore[no-any-return]

    def add(self, sock: LocalSocket) -> None:
        """Hold ``sock`` here and queue its registry row."""
        self.table.add(sock)
        self._registry_opened.append(sock)
        self._registry_wakeup.set()

    def remove(self, sock: LocalSocket) -> None:
        """Forget ``sock`` and queue its close for the registry."""
        if self.table.remove(sock):
            self._registry_closed.append(sock)
            self._registry_wakeup.set()

    def _rooms_changed(self) -> None:
        """A socket's rooms changed: write them with the next registry batch."""
        self._registry_wakeup.set()

    # --- the registry ---------------------------------------------------------------------

    async def _registry_loop(self) -> None:
        while True:
            await self._registry_wakeup.wait()
            await asyncio.sleep(conf.REGISTRY_INTERVAL)  # let a burst of opens share one write
            self._registry_wakeup.clear()
            await self.flush_registry()

    async def flush_registry(self) -> None:
        """Write pending registry rows, then let the sockets they announce speak (one write
        at a time: a flush waits for the write in flight, so a row is never overtaken)."""
        async with self._registry_lock:
            await self._write_registry()

    async def _write_registry(self) -> None:
        opened, self._registry_opened = self._registry_opened, []
        closed, self._registry_closed = self._registry_closed, []
        rooms = self.rooms.take_changed()
        if not opened and not closed and not rooms:
            return
        assert self.process_id is not None
        try:
            await in_thread(cluster.write_registry)(self.process_id, opened, closed, rooms)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Serving beats recording: the sockets go ahead, but a crash could not be recovered.
            logger.exception(
                "wsgroups: writing the socket registry failed for %d sockets", len(opened) + len(closed) + len(rooms)
            )
        finally:
            for sock in opened:
                sock.release()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The runtime of this process, created on the running loop at first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(asyncio.get_running_loop())
        return _runtime


def current_runtime() -> Runtime | None:
    """The runtime if this process holds (or held) sockets, without creating one."""
    return _runtime


def forget_runtime(runtime: Runtime) -> None:
    """Stop using ``runtime`` (it has left the cluster): the next :func:`get_runtime` makes a
    new one on the loop running then. In-process tests need it: each test has its own loop."""
    global _runtime
    with _runtime_lock:
        if _runtime is runtime:
            _runtime = None


_thread_transport: Transport | None = None
_thread_lock = threading.Lock()


def get_transport() -> Transport:
    """This process's transport: the server runtime's, or one on a private thread."""
    runtime = _runtime
    if runtime is not None and runtime.transport is not None:
        return runtime.transport
    global _thread_transport
    with _thread_lock:
        if _thread_transport is None:
            _thread_transport = _start_thread_transport()
        return _thread_transport


def cluster_transport() -> Transport | None:
    """:func:`get_transport`, or None when no channel layer is configured (in-process only)."""
    return get_transport() if conf.has_channel_layer() else None


def _start_thread_transport() -> Transport:
    layer = make_layer(conf.CHANNEL_LAYER)
    loop = asyncio.new_event_loop()
    started = concurrent.futures.Future[Transport]()

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            transport = Transport(loop, layer, Directory())
            await transport.start()
            started.set_result(transport)

        loop.run_until_complete(boot())
        loop.run_forever()

    threading.Thread(target=run, name="wsgroups-transport", daemon=True).start()
    transport = started.result(timeout=30)
    at_exit(lambda: _flush_at_exit(transport))
    return transport


def at_exit(func: Callable[[], None]) -> None:
    """Run ``func`` as the interpreter starts to exit, while thread pools still take work.

    ``atexit`` is too late for anything that reads the database: by then every
    ThreadPoolExecutor refuses new work. Callbacks given to threading's exit hook run
    before that (newest first, as concurrent.futures' own is older).
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(func)
    else:
        register(func)


def _flush_at_exit(transport: Transport) -> None:
    """Let queued sends leave before the interpreter exits (a shell, a command, a task)."""
    if transport.loop.is_closed():
        return
    future = asyncio.run_coroutine_threadsafe(transport.drain(timeout=conf.SHUTDOWN_TIMEOUT), transport.loop)
    try:
        if not future.result(conf.SHUTDOWN_TIMEOUT + 1):
            logger.error("wsgroups transport: exiting with operations still queued")
    except Exception:
        logger.exception("wsgroups transport: flush at exit failed")
