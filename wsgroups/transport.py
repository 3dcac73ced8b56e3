"""Operations between processes over the channel layer, batched per destination process.

Every process that uses wsgroups across processes has one :class:`Transport`, bound to
one event loop (the server's loop, or a private thread for shells, views under WSGI,
management commands and task workers). Operations queued from any thread are drained
by one flush task: those bound for the same process in one round go out as *one*
channel-layer message, so a broadcast or a burst of sends costs a Redis round trip per
destination process, not per socket. Rounds go out one after another, so operations
from one sender to one process arrive in the order they were queued. Each batch carries
its sender's running number: a copy that the layer delivers twice when Redis fails
mid-way (see :class:`~wsgroups.ops.RecentBatches`) is applied once.

Operations and wire format: :mod:`wsgroups.ops`. This module imports nothing of wsgroups
above the settings, the exceptions and the ops (the block-to-channel directory is handed in).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from channels.exceptions import ChannelFull

from . import ops
from .conf import conf
from .exceptions import TransportError
from .layers import claim_once, new_reachable_channel, receiving_shard, shard_count

if TYPE_CHECKING:
    from .cluster import Directory

__all__ = ["MAX_BATCH", "MAX_PENDING", "WORKER_CHANNEL", "Transport"]

logger = logging.getLogger("wsgroups.transport")

T = TypeVar("T")

#: The channel ``manage.py runworker wsgroups`` serves: handler calls in worker mode.
WORKER_CHANNEL = "wsgroups"

#: Largest number of ops, and about the most payload bytes, in one channel-layer message.
MAX_BATCH = 5000
MAX_BATCH_BYTES = 512 * 1024
#: Ops queued and not yet handed to the layer before ``queue`` refuses more.
MAX_PENDING = 200_000
#: Applies a batch addressed to this process; returns the answers as ``[token, result]``.
OpsHandler = Callable[[list[ops.Op], str], Awaitable[list[list[Any]]]]
Destination = int | str  # an ID block (resolved through the directory) or a channel name


class Transport:
    """Batched, ordered operations to other processes, and their answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: Any, directory: Directory) -> None:
        self.loop = loop
        self.layer = layer
        self.directory = directory
        self.channel_name = ""
        #: Applies ops addressed to this process (set by the runtime or the worker).
        self.on_ops: OpsHandler | None = None
        self.healthy = True
        self.stats: dict[str, int] = dict.fromkeys(
            ("batches_out", "ops_out", "ops_in", "ops_failed", "ops_to_dead", "batches_repeated", "layer_errors"), 0
        )
        self._pending: deque[tuple[Destination, ops.Op]] = deque()
        self._scheduled = False
        self._flushing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._tokens = itertools.count(1)
        self._batch_numbers = itertools.count(1)
        self._recent = ops.RecentBatches()
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_error_log = 0.0

    async def start(self) -> None:
        # A name whose messages land on the shard it is read from (channels_redis picks the
        # shards of send and receive by different hashes; see layers.reaches_its_receiver).
        self.channel_name = await new_reachable_channel(self.layer, "wsgroups")
        shards = shard_count(self.layer)
        logger.info(
            "wsgroups transport: the channel layer has %d shard%s; this process receives on %s (shard %d)",
            shards,
            "" if shards == 1 else "s",
            self.channel_name,
            receiving_shard(self.layer, self.channel_name),
        )
        # Until Redis has answered once, sends fail fast instead of queueing into the void.
        self.healthy = False
        await self._probe()
        self._tasks.append(self.loop.create_task(self._receive_loop()))

    async def stop(self) -> None:
        """Hand over what is queued, end the receiving task; both waits bounded by SHUTDOWN_TIMEOUT."""
        await self.drain(timeout=conf.SHUTDOWN_TIMEOUT)
        for task in self._tasks:
            task.cancel()
        done, stuck = await asyncio.wait(self._tasks, timeout=conf.SHUTDOWN_TIMEOUT) if self._tasks else (set(), set())
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.warning("wsgroups transport: receiving ended with %r", task.exception())
        if stuck:  # a receive stuck in the layer must not keep the process alive
            logger.warning("wsgroups transport: receive alive %.1fs after its cancellation", conf.SHUTDOWN_TIMEOUT)
        self._tasks.clear()

    # --- queueing (any thread) ---------------------------------------------------

    def on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def queue(self, destination: Destination, op: ops.Op) -> None:
        """Queue ``op`` for ``destination``; raises :class:`TransportError` while the layer is down."""
        if not self.healthy:
            raise TransportError("the channel layer is unreachable; the message was not sent")
        if len(self._pending) >= MAX_PENDING:
            raise TransportError(f"{MAX_PENDING} operations are already waiting for the channel layer")
        self._pending.append((destination, op))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._start_flush)

    def block_on(self, coroutine: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``coroutine`` on the transport's loop and wait for it, from a thread that may block."""
        if self.on_loop():
            coroutine.close()
            raise RuntimeError(f"{what} waits for other processes and cannot block the event loop; await its a-version")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(conf.QUERY_TIMEOUT + 5)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TransportError(f"{what}: no answer within {conf.QUERY_TIMEOUT + 5:.0f}s") from None

    async def await_on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the transport's loop from any loop."""
        if self.on_loop():
            return await coroutine
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def request(self, channel: str, op: ops.Query) -> Any:
        """Send ``op`` to ``channel`` (its token is set here) and return the answer."""
        token, future = self.future()
        try:
            self.queue(channel, op._replace(token=token))
            return await asyncio.wait_for(future, conf.QUERY_TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError):
            raise TransportError(f"no answer from {channel} within {conf.QUERY_TIMEOUT:.1f}s") from None
        finally:
            self._futures.pop(token, None)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued op has been handed to the layer; False on timeout."""
        try:
            await asyncio.wait_for(self._until_idle(), timeout)
            return True
        except (TimeoutError, asyncio.TimeoutError):
            return False

    async def _until_idle(self) -> None:
        while self._pending or self._flushing:
            self._idle.clear()
            if not self._flushing:
                self._start_flush()
            await self._idle.wait()

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
                by_channel: dict[str, list[ops.Op]] = {}
                size = 0
                for _ in range(min(len(self._pending), MAX_BATCH)):
                    if size > MAX_BATCH_BYTES:
                        break
                    destination, op = self._pending.popleft()
                    size += ops.size(op)
                    try:
                        channel = (
                            destination
                            if isinstance(destination, str)
                            else await self.directory.channel_for_block(destination)
                        )
                    except Exception as exc:  # the database behind the directory is away
                        self._undeliverable(
                            [op], f"ID block {destination}", f"its owner could not be looked up: {exc!r}"
                        )
                        continue
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

    def _to_dead(self, op: ops.Op) -> None:
        """An op for a process that is gone: its sockets are dead, and queries get empty answers."""
        self.stats["ops_to_dead"] += 1
        if isinstance(op, ops.QUERIES):
            self._resolve(op.token, ops.empty_answer(op))
        elif isinstance(op, ops.Handle):
            self._fail(op.token, TransportError("the worker that was to run this handler is gone"))

    async def _deliver(self, channel: str, batch: list[ops.Op]) -> None:
        if channel == self.channel_name and self.on_ops is not None:
            await self.receive_batch(batch, self.channel_name)
            return
        message = {
            "type": ops.BATCH_TYPE,
            "ops": [ops.encode(op) for op in batch],
            "reply_to": self.channel_name,
            "number": next(self._batch_numbers),  # the same on every retry: copies are recognised
        }
        if await self.send_message(channel, message):
            self.stats["batches_out"] += 1
            self.stats["ops_out"] += len(batch)
            return
        self._undeliverable(batch, channel, "the channel layer did not take the message")

    def _undeliverable(self, batch: list[ops.Op], where: str, why: str) -> None:
        """Ops that cannot be delivered: logged and counted, and their callers' waits failed."""
        self.stats["ops_failed"] += len(batch)
        logger.error("wsgroups transport: %d operations for %s could not be sent: %s", len(batch), where, why)
        for op in batch:
            if isinstance(op, ops.ANSWERED):
                self._fail(op.token, TransportError(f"{where}: {why}"))

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
                self.stats["layer_errors"] += 1
                problem = "channel full"
            except (OSError, ConnectionError, TimeoutError) as exc:
                self.stats["layer_errors"] += 1
                problem = repr(exc)
                self._set_healthy(False)
            except Exception as exc:  # redis-py's errors do not all derive from OSError
                if type(exc).__module__.split(".")[0] != "redis":
                    raise
                self.stats["layer_errors"] += 1
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
                self.stats["layer_errors"] += 1
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
        if kind == ops.BATCH_TYPE:
            await self.receive_message(message)
        elif kind == ops.REPLY_TYPE:
            self._answer(message.get("results") or [])
        elif kind == ops.MARK_TYPE and isinstance(message.get("token"), int):
            self._resolve(message["token"], True)

    async def receive_message(self, message: dict[str, Any]) -> None:
        """Decode and apply a batch message another process sent (undecodable ops are logged);
        a copy of a batch applied before is dropped."""
        sender, number = str(message.get("reply_to") or ""), message.get("number")
        if sender and isinstance(number, int) and self._recent.is_repeat(sender, number):
            self.stats["batches_repeated"] += 1
            logger.warning("wsgroups transport: dropped a second copy of batch %d from %s", number, sender)
            return
        batch: list[ops.Op] = []
        for raw in message.get("ops") or ():
            try:
                batch.append(ops.decode(raw))
            except ValueError as exc:
                logger.error("wsgroups transport: dropped an operation from another process: %s", exc)
        await self.receive_batch(batch, str(message.get("reply_to") or ""))

    async def receive_batch(self, batch: list[ops.Op], reply_to: str) -> None:
        """Apply a batch addressed to this process, in order, and answer what asks for it.

        Replies that travelled as ops (:class:`~wsgroups.ops.Reply`) are resolved where
        they stand, after the ops queued before them have been applied.
        """
        self.stats["ops_in"] += len(batch)
        start = 0
        for index, op in enumerate([*batch, None]):
            if op is not None and not isinstance(op, ops.Reply):
                continue
            if index > start and self.on_ops is not None:
                results = await self.on_ops(batch[start:index], reply_to)
                if results and reply_to:
                    if reply_to == self.channel_name:
                        self._answer(results)
                    else:
                        await self.send_message(reply_to, {"type": ops.REPLY_TYPE, "results": results})
            if op is not None:
                self._resolve(op.token, op.result)
            start = index + 1

    async def claim(self, key: str) -> bool:
        """True for the first caller with ``key`` in the whole cluster (see :func:`~wsgroups.layers.claim_once`)."""
        return await claim_once(self.layer, key)

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
