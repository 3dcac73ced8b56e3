"""Operations between processes (wsgroups.transport) over Channels' in-memory layer.

No Redis and no database: the directory is a fake that maps ID blocks to channel names,
and two transports on one ``InMemoryChannelLayer`` stand for two processes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import threading
import time
from contextlib import contextmanager

import pytest
from channels.layers import InMemoryChannelLayer
from django.test import override_settings

from wsgroups import ops
from wsgroups import transport as transport_module
from wsgroups.exceptions import TransportError
from wsgroups.ops import RecentBatches
from wsgroups.transport import Transport


class FakeDirectory:
    """Block → channel name; a block it does not know belongs to a process that is gone."""

    def __init__(self, blocks=None, broken=()):
        self.blocks = dict(blocks or {})
        self.broken = set(broken)
        self.lookups = []

    async def channel_for_block(self, block):
        self.lookups.append(block)
        await asyncio.sleep(0)  # a real directory may read the database in a thread
        if block in self.broken:
            raise RuntimeError(f"database unavailable while looking up block {block}")
        return self.blocks.get(block)


class FlakyLayer(InMemoryChannelLayer):
    """An in-memory layer whose ``send`` fails like an unreachable Redis while ``down``."""

    down = False

    async def send(self, channel, message):
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        await super().send(channel, message)


class WritesThenFailsLayer(InMemoryChannelLayer):
    """An in-memory layer whose first ``send`` stores the message, then fails like a Redis
    killed before its answer left (the sender cannot tell the message was written)."""

    failures = 1

    async def send(self, channel, message):
        await super().send(channel, message)
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError(104, "Connection reset by peer")


class GatedLayer(InMemoryChannelLayer):
    """An in-memory layer whose ``send`` waits until ``gate`` is set (a slow Redis)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate = asyncio.Event()

    async def send(self, channel, message):
        await self.gate.wait()
        await super().send(channel, message)


class Recorder:
    """An ``on_ops`` handler: records each batch, answers queries like a process holding
    sockets 11 and 12 of group "chat"."""

    def __init__(self):
        self.calls = []

    async def __call__(self, batch, reply_to):
        self.calls.append((list(batch), reply_to))
        answers = []
        for op in batch:
            if isinstance(op, ops.Members):
                answers.append([op.token, [11, 12]])
            elif isinstance(op, ops.Alive):
                answers.append([op.token, [i for i in op.socket_ids if i in (11, 12)]])
            elif isinstance(op, ops.Broadcast):
                answers.append([op.token, len({11, 12} - set(op.excluded))])
            elif isinstance(op, ops.GroupClose):
                answers.append([op.token, 2])
        return answers

    @property
    def ops(self):
        return [op for batch, _ in self.calls for op in batch]


async def start_transport(layer, directory=None, on_ops=None):
    transport = Transport(asyncio.get_running_loop(), layer, directory or FakeDirectory())
    await transport.start()
    transport.on_ops = on_ops
    return transport


async def receive(layer, channel, timeout=1.0):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def nothing_more(layer, channel):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.05)


@contextmanager
def transport_log():
    """The records of the ``wsgroups.transport`` logger (the project's logging does not
    propagate ``wsgroups`` to the root logger, where caplog listens)."""
    records = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = ListHandler(level=logging.DEBUG)
    logger = logging.getLogger("wsgroups.transport")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# --- batching and order -------------------------------------------------------------


def test_ops_for_one_destination_in_one_round_go_out_as_one_message():
    async def main():
        layer = InMemoryChannelLayer()
        peer = await layer.new_channel("peer")
        transport = await start_transport(layer, FakeDirectory({1: peer}))
        sent = [
            ops.Send(1 << 22 | 1, "a"),
            ops.Send(1 << 22 | 2, b"\x00b", 1),
            ops.Close(1 << 22 | 1, 1000, "bye"),
            ops.Broadcast("chat", "x", [1 << 22 | 2]),
        ]
        transport.queue(1, sent[0])
        transport.queue(1, sent[1])
        transport.queue(peer, sent[2])  # by channel name: the same destination
        transport.queue(1, sent[3])
        assert await transport.drain(1) is True
        message = await receive(layer, peer)
        assert message["type"] == ops.BATCH_TYPE
        assert message["reply_to"] == transport.channel_name
        assert message["ops"] == [ops.encode(op) for op in sent]
        assert [ops.decode(raw) for raw in message["ops"]] == sent
        await nothing_more(layer, peer)
        assert transport.stats["batches_out"] == 1
        assert transport.stats["ops_out"] == 4
        await transport.stop()

    asyncio.run(main())


def test_ops_for_several_destinations_make_one_message_each():
    async def main():
        layer = InMemoryChannelLayer()
        one = await layer.new_channel("one")
        two = await layer.new_channel("two")
        transport = await start_transport(layer, FakeDirectory({1: one, 2: two}))
        for n in range(6):
            transport.queue(1 + n % 2, ops.Send(n, f"m{n}"))
        assert await transport.drain(1)
        first = await receive(layer, one)
        second = await receive(layer, two)
        assert [ops.decode(raw).payload for raw in first["ops"]] == ["m0", "m2", "m4"]
        assert [ops.decode(raw).payload for raw in second["ops"]] == ["m1", "m3", "m5"]
        await nothing_more(layer, one)
        await nothing_more(layer, two)
        assert transport.stats["batches_out"] == 2 and transport.stats["ops_out"] == 6
        await transport.stop()

    asyncio.run(main())


def test_order_is_kept_across_rounds():
    async def main():
        layer = InMemoryChannelLayer()
        peer = await layer.new_channel("peer")
        transport = await start_transport(layer, FakeDirectory({1: peer}))
        n = 0
        for burst in (1, 5, 2, 7, 1, 3):
            for _ in range(burst):
                transport.queue(1, ops.Send(1, str(n)))
                n += 1
            await asyncio.sleep(0)  # let a round start while more is queued
        assert await transport.drain(1)
        received = []
        messages = 0
        while len(received) < n:
            message = await receive(layer, peer)
            messages += 1
            received += [ops.decode(raw).payload for raw in message["ops"]]
        assert received == [str(i) for i in range(n)]
        assert 1 < messages < n  # batched, in several rounds
        await nothing_more(layer, peer)
        await transport.stop()

    asyncio.run(main())


def test_queue_from_other_threads_is_delivered():
    async def main():
        layer = InMemoryChannelLayer()
        peer = await layer.new_channel("peer")
        transport = await start_transport(layer, FakeDirectory({1: peer}))

        def worker(k):
            for i in range(20):
                transport.queue(1, ops.Send(k, f"{k}:{i}"))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in threads])
        assert await transport.drain(1)
        received = []
        while len(received) < 60:
            received += [ops.decode(raw) for raw in (await receive(layer, peer))["ops"]]
        for k in range(3):  # each thread's ops in its own order
            assert [op.payload for op in received if op.socket_id == k] == [f"{k}:{i}" for i in range(20)]
        await transport.stop()

    asyncio.run(main())


# --- destinations that are gone -----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        (ops.Members("chat"), []),
        (ops.Alive([5, 6]), []),
        (ops.Broadcast("chat", "hi", []), 0),
        (ops.GroupClose("chat", 1001, ""), 0),
    ],
    ids=lambda value: type(value).__name__,
)
def test_a_query_to_a_block_whose_owner_is_gone_resolves_at_once_with_its_empty_answer(query, answer):
    async def main():
        layer = InMemoryChannelLayer()
        transport = await start_transport(layer, FakeDirectory({}))
        token, future = transport.future()
        started = time.monotonic()
        transport.queue(7, query._replace(token=token))
        assert await asyncio.wait_for(future, 1) == answer
        assert time.monotonic() - started < 0.5
        assert transport.stats["ops_to_dead"] == 1
        assert transport.stats["batches_out"] == 0
        await transport.stop()

    with override_settings(WSGROUPS={"QUERY_TIMEOUT": 2.0}):
        asyncio.run(main())


def test_sends_and_handler_calls_to_a_gone_process():
    async def main():
        layer = InMemoryChannelLayer()
        directory = FakeDirectory({})
        transport = await start_transport(layer, directory)
        transport.queue(7, ops.Send(7 << 22, "lost"))
        token, future = transport.future()
        transport.queue(7, ops.Handle("chat", "text", 7 << 22, "hi", None, token))
        with pytest.raises(TransportError, match="gone"):
            await asyncio.wait_for(future, 1)
        assert transport.stats["ops_to_dead"] == 2
        assert directory.lookups == [7, 7]
        await transport.stop()

    asyncio.run(main())


# --- requests -----------------------------------------------------------------------


def test_request_times_out_with_a_transport_error_naming_the_channel():
    async def main():
        layer = InMemoryChannelLayer()
        silent = await layer.new_channel("silent")
        transport = await start_transport(layer)
        started = time.monotonic()
        with pytest.raises(TransportError, match=re.escape(silent)):
            await transport.request(silent, ops.Members("chat"))
        assert 0.04 < time.monotonic() - started < 1
        # The query did go out, with a token of its own.
        sent = ops.decode((await receive(layer, silent))["ops"][0])
        assert isinstance(sent, ops.Members) and sent.group == "chat" and sent.token != 0
        # A late answer finds nothing waiting and is ignored.
        assert transport._futures == {}
        transport._answer([[sent.token, [1]]])
        await transport.stop()

    with override_settings(WSGROUPS={"QUERY_TIMEOUT": 0.05}):
        asyncio.run(main())


def test_a_batch_sent_to_itself_is_applied_through_on_ops():
    async def main():
        layer = InMemoryChannelLayer()
        recorder = Recorder()
        directory = FakeDirectory()
        transport = await start_transport(layer, directory, on_ops=recorder)
        directory.blocks[3] = transport.channel_name
        transport.queue(3, ops.Send(3 << 22, "to myself"))
        members = await transport.request(transport.channel_name, ops.Members("chat"))
        assert members == [11, 12]
        assert len(recorder.calls) == 1  # both ops in one round, one call
        batch, reply_to = recorder.calls[0]
        assert batch[0] == ops.Send(3 << 22, "to myself")
        assert isinstance(batch[1], ops.Members) and batch[1].group == "chat"
        assert reply_to == transport.channel_name
        # Nothing went through the layer.
        assert transport.stats["batches_out"] == 0
        assert transport.stats["ops_in"] == 2
        await transport.stop()

    asyncio.run(main())


def test_reply_ops_resolve_only_after_the_ops_before_them_were_applied():
    async def main():
        layer = InMemoryChannelLayer()
        transport = await start_transport(layer)
        token, future = transport.future()
        seen = []

        async def on_ops(batch, reply_to):
            for op in batch:
                await asyncio.sleep(0.01)  # applying takes time
                seen.append((op.payload, future.done()))
            return []

        transport.on_ops = on_ops
        batch = [ops.Send(1, "a"), ops.Send(1, "b"), ops.Reply(token, "done"), ops.Send(1, "c")]
        await transport.receive_message({"type": ops.BATCH_TYPE, "ops": [ops.encode(op) for op in batch]})
        assert seen == [("a", False), ("b", False), ("c", True)]
        assert future.result() == "done"
        await transport.stop()

    asyncio.run(main())


def test_a_reply_op_alone_resolves_without_on_ops():
    async def main():
        transport = await start_transport(InMemoryChannelLayer())
        token, future = transport.future()
        await transport.receive_batch([ops.Reply(token, {"ok": True})], "")
        assert future.result() == {"ok": True}
        transport.discard(token)
        await transport.stop()

    asyncio.run(main())


# --- health and limits --------------------------------------------------------------


def test_queue_raises_while_the_layer_is_unreachable_and_recovers():
    async def main():
        layer = FlakyLayer()
        peer = await layer.new_channel("peer")
        transport = await start_transport(layer, FakeDirectory({1: peer}))
        assert transport.healthy
        layer.down = True
        token, future = transport.future()
        transport.queue(1, ops.Members("chat", token))
        transport.queue(1, ops.Send(1, "x"))
        started = time.monotonic()
        with pytest.raises(TransportError, match=re.escape(peer)):
            await asyncio.wait_for(future, 2)  # failed, not timed out
        assert time.monotonic() - started < 1
        assert transport.healthy is False
        assert transport.stats["ops_failed"] == 2
        assert transport.stats["layer_errors"] >= 1  # every failed attempt, retries included
        with pytest.raises(TransportError, match="unreachable"):
            transport.queue(1, ops.Send(1, "y"))
        with pytest.raises(TransportError, match="unreachable"):
            await transport.request(peer, ops.Members("chat"))
        # A message from another process proves the layer is back.
        layer.down = False
        await layer.send(transport.channel_name, {"type": ops.REPLY_TYPE, "results": []})
        for _ in range(50):
            if transport.healthy:
                break
            await asyncio.sleep(0.01)
        assert transport.healthy is True
        transport.queue(1, ops.Send(1, "z"))
        assert await transport.drain(1)
        assert [ops.decode(raw).payload for raw in (await receive(layer, peer))["ops"]] == ["z"]
        await transport.stop()

    with override_settings(WSGROUPS={"SEND_TIMEOUT": 0.05, "QUERY_TIMEOUT": 2.0}):
        asyncio.run(main())


def test_queue_raises_when_max_pending_is_reached(monkeypatch):
    monkeypatch.setattr(transport_module, "MAX_PENDING", 3)

    async def main():
        layer = InMemoryChannelLayer()
        peer = await layer.new_channel("peer")
        transport = await start_transport(layer, FakeDirectory({1: peer}))
        for n in range(3):
            transport.queue(1, ops.Send(1, str(n)))
        with pytest.raises(TransportError, match="3 operations are already waiting"):
            transport.queue(1, ops.Send(1, "refused"))
        assert await transport.drain(1)
        transport.queue(1, ops.Send(1, "3"))  # room again once handed over
        assert await transport.drain(1)
        payloads = [ops.decode(raw).payload for raw in (await receive(layer, peer))["ops"]]
        payloads += [ops.decode(raw).payload for raw in (await receive(layer, peer))["ops"]]
        assert payloads == ["0", "1", "2", "3"]
        await transport.stop()

    asyncio.run(main())


def test_drain_returns_true_only_once_all_is_handed_over():
    async def main():
        layer = GatedLayer()
        peer = await layer.new_channel("peer")
        transport = await start_transport(layer, FakeDirectory({1: peer}))
        assert await transport.drain(0.05) is True  # nothing queued
        transport.queue(1, ops.Send(1, "a"))
        transport.queue(1, ops.Send(1, "b"))
        assert await transport.drain(0.05) is False  # the layer has not taken it
        transport.queue(1, ops.Send(1, "c"))  # queued while a round is stuck
        layer.gate.set()
        assert await transport.drain(1) is True
        assert not transport._pending
        payloads = [ops.decode(raw).payload for raw in (await receive(layer, peer))["ops"]]
        payloads += [ops.decode(raw).payload for raw in (await receive(layer, peer))["ops"]]
        assert payloads == ["a", "b", "c"]
        await transport.stop()

    asyncio.run(main())


class StuckLayer(InMemoryChannelLayer):
    """An in-memory layer whose ``receive`` does not end when cancelled (a stuck client)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.release = asyncio.Event()

    async def receive(self, channel):
        while True:
            try:
                await self.release.wait()
                return await super().receive(channel)
            except asyncio.CancelledError:
                if self.release.is_set():
                    raise


@override_settings(WSGROUPS={"SHUTDOWN_TIMEOUT": 0.2})
def test_stop_does_not_wait_forever_for_a_receive_that_ignores_its_cancellation():
    async def main():
        layer = StuckLayer()
        transport = await start_transport(layer)
        try:
            with transport_log() as records:
                started = time.monotonic()
                await asyncio.wait_for(transport.stop(), 5)
                elapsed = time.monotonic() - started
        finally:
            layer.release.set()  # the stuck task ends at the next cancellation (asyncio.run's)
        assert elapsed < 2  # waiting forever fails at wait_for's 5 s, on every Python
        # Where the receive ignored its cancellation (Python 3.13 ends it through the
        # transport anyway), stop waited SHUTDOWN_TIMEOUT for it, and said so.
        said = any("receive alive 0.2s after its cancellation" in r.getMessage() for r in records)
        assert said == (elapsed >= 0.15), (said, elapsed)

    asyncio.run(main())


# --- waiting from threads -----------------------------------------------------------


def test_block_on_from_a_plain_thread_runs_on_the_transport_loop():
    async def main():
        loop = asyncio.get_running_loop()
        transport = await start_transport(InMemoryChannelLayer())

        async def where():
            await asyncio.sleep(0)
            return asyncio.get_running_loop() is loop, threading.get_ident()

        async def fails():
            raise ValueError("from the loop")

        def in_thread():
            on_loop, ident = transport.block_on(where(), "where")
            with pytest.raises(ValueError, match="from the loop"):
                transport.block_on(fails(), "fails")
            return on_loop, ident, threading.get_ident()

        on_loop, loop_thread, worker_thread = await loop.run_in_executor(None, in_thread)
        assert on_loop is True
        assert loop_thread == threading.get_ident() != worker_thread
        await transport.stop()

    asyncio.run(main())


def test_block_on_from_the_loop_raises_and_closes_the_coroutine():
    async def main():
        transport = await start_transport(InMemoryChannelLayer())

        async def never():
            raise AssertionError("must not run")

        coroutine = never()
        with pytest.raises(RuntimeError, match=r"is_dead\(\) waits for other processes"):
            transport.block_on(coroutine, "is_dead()")
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
        await transport.stop()

    asyncio.run(main())


def test_await_on_loop_from_another_loop():
    async def main():
        loop = asyncio.get_running_loop()
        transport = await start_transport(InMemoryChannelLayer())

        async def which():
            return asyncio.get_running_loop() is loop

        assert await transport.await_on_loop(which()) is True
        other = await loop.run_in_executor(None, lambda: asyncio.run(transport.await_on_loop(which())))
        assert other is True
        await transport.stop()

    asyncio.run(main())


# --- receiving ----------------------------------------------------------------------


def test_receive_message_logs_and_drops_an_undecodable_op_but_applies_the_rest():
    async def main():
        recorder = Recorder()
        transport = await start_transport(InMemoryChannelLayer(), on_ops=recorder)
        message = {
            "type": ops.BATCH_TYPE,
            "ops": [
                ops.encode(ops.Send(1, "a")),
                ["zz", 1],
                "junk",
                ["c", 1],
                ops.encode(ops.Close(1, 1000, "bye")),
            ],
            "reply_to": "",
        }
        with transport_log() as records:
            await transport.receive_message(message)
        assert recorder.ops == [ops.Send(1, "a"), ops.Close(1, 1000, "bye")]
        errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
        assert len(errors) == 3
        assert "unknown operation 'zz'" in errors[0]
        assert "not an operation" in errors[1]
        assert "operation 'c' has 1 fields" in errors[2]
        assert transport.stats["ops_in"] == 2
        await transport.stop()

    asyncio.run(main())


def test_the_receive_loop_survives_bad_messages():
    async def main():
        layer = InMemoryChannelLayer()
        applied = []

        async def on_ops(batch, reply_to):
            if any(op.payload == "boom" for op in batch):
                raise RuntimeError("boom")
            applied.extend(op.payload for op in batch)
            return []

        transport = await start_transport(layer, on_ops=on_ops)
        channel = transport.channel_name
        with transport_log() as records:
            await layer.send(channel, {"type": "something.else"})
            await layer.send(channel, {"type": ops.BATCH_TYPE, "ops": "not a list of ops"})
            await layer.send(channel, {"type": ops.BATCH_TYPE, "ops": [ops.encode(ops.Send(1, "boom"))]})
            await layer.send(channel, {"type": ops.BATCH_TYPE, "ops": [ops.encode(ops.Send(1, "fine"))]})
            for _ in range(100):
                if applied:
                    break
                await asyncio.sleep(0.01)
        assert applied == ["fine"]
        assert any("could not apply" in r.getMessage() for r in records)
        await transport.stop()

    asyncio.run(main())


# --- two processes ------------------------------------------------------------------


def test_two_transports_on_one_layer_talk_to_each_other():
    async def main():
        layer = InMemoryChannelLayer()
        server = Recorder()
        a = await start_transport(layer, on_ops=Recorder())
        b = await start_transport(layer, on_ops=server)
        a.directory.blocks[5] = b.channel_name
        a.queue(5, ops.Send(5 << 22, "first"))
        members, count, alive = await asyncio.gather(
            a.request(b.channel_name, ops.Members("chat")),
            a.request(b.channel_name, ops.Broadcast("chat", "hi", [11])),
            a.request(b.channel_name, ops.Alive([11, 99])),
        )
        assert (members, count, alive) == ([11, 12], 1, [11])
        # One message carried the send and the three queries, in order.
        assert len(server.calls) == 1
        batch, reply_to = server.calls[0]
        assert reply_to == a.channel_name
        assert [type(op) for op in batch] == [ops.Send, ops.Members, ops.Broadcast, ops.Alive]
        assert a.stats["batches_out"] == 1 and a.stats["ops_out"] == 4
        assert b.stats["ops_in"] == 4
        assert b.stats["batches_out"] == 0  # the answers are not a batch of ops
        await a.stop()
        await b.stop()

    asyncio.run(main())


def test_a_reply_op_from_a_worker_resolves_after_its_earlier_ops():
    """Worker mode: a worker's sends, then the handler's result, travel as one ordered batch."""

    async def main():
        layer = InMemoryChannelLayer()
        token_box = {}
        seen = []

        async def server_on_ops(batch, reply_to):
            for op in batch:
                await asyncio.sleep(0.005)
                seen.append((op.payload, token_box["future"].done()))
            return []

        server = await start_transport(layer, on_ops=server_on_ops)
        worker = await start_transport(layer, on_ops=Recorder())
        token, token_box["future"] = server.future()
        worker.queue(server.channel_name, ops.Send(1, "x"))
        worker.queue(server.channel_name, ops.Send(1, "y"))
        worker.queue(server.channel_name, ops.Reply(token, True))
        assert await asyncio.wait_for(token_box["future"], 1) is True
        assert seen == [("x", False), ("y", False)]
        await worker.stop()
        await server.stop()

    asyncio.run(main())


# --- robustness -----------------------------------------------------------------------


def test_a_directory_failure_for_one_block_does_not_drop_ops_for_other_destinations():
    """A lookup that fails (the database is briefly unreachable) must not lose the ops
    queued in the same round for processes that are alive."""

    async def main():
        layer = InMemoryChannelLayer()
        peer = await layer.new_channel("peer")
        transport = await start_transport(layer, FakeDirectory({1: peer}, broken={9}))
        transport.queue(1, ops.Send(1 << 22, "before"))
        transport.queue(9, ops.Send(9 << 22, "unknown owner"))
        transport.queue(1, ops.Send(1 << 22, "after"))
        with transport_log():
            assert await transport.drain(1)
        delivered = []
        try:
            while True:
                message = await receive(layer, peer, timeout=0.1)
                delivered += [ops.decode(raw).payload for raw in message["ops"]]
        except asyncio.TimeoutError:
            pass
        assert delivered == ["before", "after"]
        await transport.stop()

    asyncio.run(main())


# --- copies from the layer ------------------------------------------------------------


def test_a_send_retried_after_its_message_was_written_is_applied_once():
    """The retry of a send whose message did reach Redis makes a second copy: the same
    batch number, so the receiver applies it once."""

    async def main():
        layer = WritesThenFailsLayer()
        server = Recorder()
        a = await start_transport(layer, on_ops=Recorder())
        b = await start_transport(layer, on_ops=server)
        a.directory.blocks[5] = b.channel_name
        with transport_log() as records:
            a.queue(5, ops.Send(5 << 22, "once"))
            assert await a.drain(2)
            a.queue(5, ops.Send(5 << 22, "then this"))
            assert await a.drain(2)
            for _ in range(200):
                if b.stats["ops_in"] >= 2:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
        assert [op.payload for op in server.ops] == ["once", "then this"]
        assert b.stats["batches_repeated"] == 1
        assert any("dropped a second copy of batch 1 from" in r.getMessage() for r in records)
        await a.stop()
        await b.stop()

    asyncio.run(main())


def test_receive_message_drops_a_batch_number_seen_from_the_same_sender_only():
    async def main():
        recorder = Recorder()
        transport = await start_transport(InMemoryChannelLayer(), on_ops=recorder)

        def batch(text, sender, number=None):
            message = {"type": ops.BATCH_TYPE, "ops": [ops.encode(ops.Send(1, text))], "reply_to": sender}
            if number is not None:
                message["number"] = number
            return message

        with transport_log():
            for message in (
                batch("a1", "wsgroups.a!1", 1),
                batch("a1 again", "wsgroups.a!1", 1),
                batch("b1", "wsgroups.b!1", 1),  # another sender's number 1
                batch("a2", "wsgroups.a!1", 2),
                batch("unnumbered", "wsgroups.a!1"),
                batch("unnumbered", "wsgroups.a!1"),  # no number: nothing to go by
            ):
                await transport.receive_message(message)
        assert [op.payload for op in recorder.ops] == ["a1", "b1", "a2", "unnumbered", "unnumbered"]
        assert transport.stats["batches_repeated"] == 1
        await transport.stop()

    asyncio.run(main())


def test_recent_batches_forget_old_numbers_and_quiet_senders():
    recent = RecentBatches(per_sender=3, senders=2)
    assert not any(recent.is_repeat("a", n) for n in (1, 2, 3))
    assert recent.is_repeat("a", 3) and recent.is_repeat("a", 1)
    assert not recent.is_repeat("a", 4)  # 1 is forgotten now
    assert not recent.is_repeat("a", 1)
    assert not recent.is_repeat("b", 1)
    assert recent.is_repeat("a", 4)  # "a" was heard from last: "b" is next to go
    assert not recent.is_repeat("c", 1)  # two senders at most: "b" is forgotten
    assert recent.is_repeat("a", 3)
    assert not recent.is_repeat("b", 1)
