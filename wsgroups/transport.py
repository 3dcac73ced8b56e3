"""Operations between processes over the channel layer, batched per destination process.

Every process that uses wsgroups across processes has one :class:`Transport`, bound to
one event loop (the server's loop, or a private thread for shells, views under WSGI,
management commands and task workers). Operations queued from any thread are drained
by one flush task: those bound for the same process in one round go out as *one*
channel-layer message, so a broadcast or a burst of sends costs a Redis round trip per
destination process, not per socket. Rounds go out one after another, so operations
from one sender to one process arrive in the order they were queued.

Wire format of a batch: ``{"type": "wsgroups.ops", "ops": [op, ...], "reply_to": channel}``
where each op is a list whose first item says what it is (see ``OP_*``). Ops that
expect an answer carry a token as their last item; the destination answers with
``{"type": "wsgroups.reply", "results": [[token, result], ...]}``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from channels.exceptions import ChannelFull

from .conf import conf
from .exceptions import TransportError

__all__ = [
    "OP_ALIVE",
    "OP_BROADCAST",
    "OP_CLOSE",
    "OP_GROUP_CLOSE",
    "OP_HANDLE",
    "OP_MEMBERS",
    "OP_REPLY",
    "OP_SEND",
    "WORKER_CHANNEL",
    "Transport",
    "get_transport",
    "make_layer",
]

logger = logging.getLogger("wsgroups.transport")

T = TypeVar("T")

OP_SEND = "s"  # ["s", id, payload, flags]
OP_CLOSE = "c"  # ["c", id, code, reason]
OP_BROADCAST = "b"  # ["b", group, payload, excluded_ids, token] → count
OP_GROUP_CLOSE = "g"  # ["g", group, code, reason, token] → count
OP_ALIVE = "a"  # ["a", ids, token] → the ids that are open
OP_MEMBERS = "m"  # ["m", group, token] → ids of the group's open sockets
OP_HANDLE = "h"  # ["h", group, kind, id, payload, session_key, token] → True if the handler succeeded
OP_REPLY = "r"  # ["r", token, result]: an answer queued behind the sender's earlier ops

#: The channel ``manage.py runworker wsgroups`` serves: handler calls in worker mode.
WORKER_CHANNEL = "wsgroups"

#: Largest number of ops, and about the most payload bytes, in one channel-layer message.
MAX_BATCH = 5000
MAX_BATCH_BYTES = 512 * 1024
#: Ops queued and not yet handed to the layer before ``submit`` refuses more.
MAX_PENDING = 200_000

OpsHandler = Callable[[list[list[Any]], str], Awaitable[list[list[Any]]]]
Destination = int | str  # an ID block (resolved through the directory) or a channel name


def tune_layer(layer: Any) -> Any:
    """Make a channels_redis layer survive quiet periods.

    redis-py's read timeout defaults to channels_redis's 5 s blocking-read timeout, so a
    reader with nothing to read fails after 5 s (channels_redis issue 422) and a message
    popped just then is lost. The layer's connections get a longer read timeout and a
    short connect timeout (so an outage is noticed quickly), unless configured.
    """
    brpop_timeout = getattr(layer, "brpop_timeout", None)
    for host in getattr(layer, "hosts", None) or ():
        if isinstance(host, dict) and brpop_timeout is not None:
            host.setdefault("socket_timeout", brpop_timeout + 10)
            host.setdefault("socket_connect_timeout", 2)
    return layer


def install_layer_tuning() -> None:
    """Tune every layer Channels builds in this process (consumers and ``runworker`` too)."""
    from channels.layers import channel_layers

    if getattr(channel_layers, "_wsgroups_tuned", False):
        return
    make_backend = channel_layers.make_backend

    def make_tuned_backend(name: str) -> Any:
        return tune_layer(make_backend(name))

    channel_layers.make_backend = make_tuned_backend
    channel_layers._wsgroups_tuned = True


def make_layer(alias: str) -> Any:
    """A private, tuned instance of the configured channel layer."""
    from channels.layers import channel_layers

    if alias not in channel_layers.configs:
        raise TransportError(f"CHANNEL_LAYERS has no {alias!r} layer; wsgroups cannot reach other processes")
    return tune_layer(channel_layers.make_backend(alias))


class Transport:
    """Batched, ordered operations to other processes, and their answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: Any, directory: Any) -> None:
        self.loop = loop
        self.layer = layer
        self.directory = directory
        self.channel_name = ""
        #: Applies ops addressed to this process (set by the runtime or the worker).
        self.on_ops: OpsHandler | None = None
        self.healthy = True
        self.stats: dict[str, int] = {"batches_out": 0, "ops_out": 0, "ops_in": 0, "ops_failed": 0, "ops_to_dead": 0}
        self._pending: deque[tuple[Destination, list[Any]]] = deque()
        self._scheduled = False
        self._flushing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._tokens = itertools.count(1)
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_error_log = 0.0

    async def start(self) -> None:
        self.channel_name = await self.layer.new_channel("wsgroups")
        # Until Redis has answered once, sends fail fast instead of queueing into the void.
        self.healthy = False
        await self._probe()
        self._tasks.append(self.loop.create_task(self._receive_loop()))

    async def stop(self) -> None:
        await self.drain(timeout=conf.SHUTDOWN_TIMEOUT)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()

    # --- queueing (any thread) ---------------------------------------------------

    def on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def submit(self, destination: Destination, op: list[Any]) -> None:
        """Queue ``op`` for ``destination``; raises :class:`TransportError` while the layer is down."""
        if not self.healthy:
            raise TransportError("the channel layer is unreachable; the message was not sent")
        if len(self._pending) >= MAX_PENDING:
            raise TransportError(f"{MAX_PENDING} operations are already waiting for the channel layer")
        self._pending.append((destination, op))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._start_flush)

    def call(self, coroutine: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``coroutine`` on the transport's loop from a thread that may block."""
        if self.on_loop():
            coroutine.close()
            raise RuntimeError(f"{what} waits for other processes and cannot block the event loop; await its a-version")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(conf.QUERY_TIMEOUT + 5)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TransportError(f"{what}: no answer within {conf.QUERY_TIMEOUT + 5:.0f}s") from None

    async def acall(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the transport's loop from any loop."""
        if self.on_loop():
            return await coroutine
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def request(self, channel: str, op: list[Any]) -> Any:
        """Send ``op`` (without its token) to ``channel`` and return the answer."""
        token, future = self.future()
        try:
            self.submit(channel, [*op, token])
            async with asyncio.timeout(conf.QUERY_TIMEOUT):
                return await future
        except TimeoutError:
            raise TransportError(f"no answer from {channel} within {conf.QUERY_TIMEOUT:.1f}s") from None
        finally:
            self._futures.pop(token, None)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued op has been handed to the layer; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while self._pending or self._flushing:
                    self._idle.clear()
                    if not self._flushing:
                        self._start_flush()
                    await self._idle.wait()
            return True
        except TimeoutError:
            return False

    # --- flushing (on the loop) --------------------------------------------------

    def _start_flush(self) -> None:
        if not self._flushing:
            self._flushing = True
            self._idle.clear()
            self.loop.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while True:
                self._scheduled = False
                if not self._pending:
                    break
                by_channel: dict[str, list[list[Any]]] = {}
                size = 0
                for _ in range(min(len(self._pending), MAX_BATCH)):
                    if size > MAX_BATCH_BYTES:
                        break
                    destination, op = self._pending.popleft()
                    size += _op_size(op)
                    channel = (
                        destination
                        if isinstance(destination, str)
                        else await self.directory.channel_for_block(destination)
                    )
                    if channel is None:
                        self._to_dead(op)
                    else:
                        by_channel.setdefault(channel, []).append(op)
                await asyncio.gather(*(self._deliver(channel, ops) for channel, ops in by_channel.items()))
        except Exception:
            logger.exception("wsgroups transport: flush failed")
        finally:
            self._flushing = False
            self._idle.set()
            if self._pending and not self._scheduled:
                self._scheduled = True
                self._start_flush()

    def _to_dead(self, op: list[Any]) -> None:
        """An op for a process that is gone: its sockets are dead, and queries get empty answers."""
        self.stats["ops_to_dead"] += 1
        empty: dict[str, Any] = {OP_BROADCAST: 0, OP_GROUP_CLOSE: 0, OP_ALIVE: [], OP_MEMBERS: []}
        if op[0] in empty:
            self._resolve(op[-1], empty[op[0]])
        elif op[0] == OP_HANDLE:
            self._fail(op[-1], TransportError("the worker that was to run this handler is gone"))

    async def _deliver(self, channel: str, ops: list[list[Any]]) -> None:
        if channel == self.channel_name and self.on_ops is not None:
            await self.apply(ops, self.channel_name)
            return
        message = {"type": "wsgroups.ops", "ops": ops, "reply_to": self.channel_name}
        if await self.send_message(channel, message):
            self.stats["batches_out"] += 1
            self.stats["ops_out"] += len(ops)
            return
        self.stats["ops_failed"] += len(ops)
        logger.error("wsgroups transport: %d operations for %s could not be sent", len(ops), channel)
        for op in ops:
            if op[0] in (OP_BROADCAST, OP_GROUP_CLOSE, OP_ALIVE, OP_MEMBERS, OP_HANDLE):
                self._fail(op[-1], TransportError(f"the channel layer did not take the message for {channel}"))

    async def send_message(self, channel: str, message: dict[str, Any]) -> bool:
        """Hand one message to the layer, retrying while the channel is full or Redis is away."""
        deadline = time.monotonic() + conf.SEND_TIMEOUT
        delay = 0.01
        while True:
            try:
                await self.layer.send(channel, message)
                self._set_healthy(True)
                return True
            except ChannelFull:
                problem = "channel full"
            except (OSError, ConnectionError, TimeoutError) as exc:
                problem = repr(exc)
                self._set_healthy(False)
            except Exception as exc:  # redis-py's errors do not all derive from OSError
                if type(exc).__module__.split(".")[0] != "redis":
                    raise
                problem = repr(exc)
                self._set_healthy(False)
            if time.monotonic() + delay > deadline:
                logger.error("wsgroups transport: giving up on %s after %.1fs: %s", channel, conf.SEND_TIMEOUT, problem)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # --- receiving (on the loop) ---------------------------------------------------

    async def _receive_loop(self) -> None:
        delay = 0.05
        while True:
            try:
                message = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_healthy(False)
                now = time.monotonic()
                if now - self._last_error_log > 5:
                    self._last_error_log = now
                    logger.warning("wsgroups transport: receiving failed (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                await self._probe()
                continue
            delay = 0.05
            self._set_healthy(True)
            try:
                await self._dispatch(message)
            except Exception:
                logger.exception("wsgroups transport: could not apply %s", message.get("type"))

    async def _probe(self) -> None:
        """Ask Redis whether it is there (layers without Redis connections count as healthy)."""
        connection = getattr(self.layer, "connection", None)
        try:
            if connection is not None:
                await connection(0).ping()
        except Exception:
            return
        self._set_healthy(True)

    def _set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if healthy:
                logger.info("wsgroups transport: the channel layer is reachable")
            else:
                logger.error("wsgroups transport: the channel layer is unreachable")

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "wsgroups.ops":
            await self.apply(message.get("ops") or [], message.get("reply_to") or "")
        elif kind == "wsgroups.reply":
            self._answer(message.get("results") or [])

    async def apply(self, ops: list[list[Any]], reply_to: str) -> None:
        """Apply a batch addressed to this process, in order, and answer what asks for it.

        Replies that travelled as ops (:data:`OP_REPLY`) are resolved where they stand,
        after the ops queued before them have been applied.
        """
        self.stats["ops_in"] += len(ops)
        start = 0
        for index, op in enumerate([*ops, None]):
            if op is not None and op[0] != OP_REPLY:
                continue
            if index > start and self.on_ops is not None:
                results = await self.on_ops(ops[start:index], reply_to)
                if results and reply_to:
                    if reply_to == self.channel_name:
                        self._answer(results)
                    else:
                        await self.send_message(reply_to, {"type": "wsgroups.reply", "results": results})
            if op is not None:
                self._resolve(op[1], op[2])
            start = index + 1

    async def claim(self, key: str) -> bool:
        """True for the first caller with ``key`` in the whole cluster (for 60 s).

        A message on a channel that several processes receive (the workers' channel) can
        be delivered twice: channels_redis puts a message taken by one receiver back for
        another when that one starts receiving. Claims make each handler call run once.
        """
        connection = getattr(self.layer, "connection", None)
        if connection is None:
            return True
        name = f"{getattr(self.layer, 'prefix', 'asgi')}:wsgroups:claim:{key}"
        try:
            client = connection(self.layer.consistent_hash(name))
            return bool(await client.set(name, b"1", nx=True, ex=60))
        except Exception as exc:
            logger.warning("wsgroups transport: could not claim %s (%r); running it anyway", key, exc)
            return True

    def future(self) -> tuple[int, asyncio.Future[Any]]:
        """A token and the future its answer will resolve (forget it with :meth:`discard`)."""
        token = next(self._tokens)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._futures[token] = future
        return token, future

    def discard(self, token: int) -> None:
        self._futures.pop(token, None)

    def _answer(self, results: list[list[Any]]) -> None:
        for token, result in results:
            self._resolve(token, result)

    def _resolve(self, token: int, result: Any) -> None:
        future = self._futures.get(token)
        if future is not None and not future.done():
            future.set_result(result)

    def _fail(self, token: int, error: Exception) -> None:
        future = self._futures.get(token)
        if future is not None and not future.done():
            future.set_exception(error)


def _op_size(op: list[Any]) -> int:
    return 16 + sum(len(item) for item in op if isinstance(item, (str, bytes)))


_thread_transport: Transport | None = None
_thread_lock = threading.Lock()


def get_transport() -> Transport:
    """This process's transport: the server runtime's, or one on a private thread."""
    from .runtime import current_runtime

    runtime = current_runtime()
    if runtime is not None and runtime.transport is not None:
        return runtime.transport
    global _thread_transport
    with _thread_lock:
        if _thread_transport is None:
            _thread_transport = _start_thread_transport()
        return _thread_transport


def _start_thread_transport() -> Transport:
    from .cluster import Directory

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
    atexit.register(_flush_at_exit, transport)
    return transport


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
