"""Unit tests of wsgroups.shutdown: shutdown() on a runtime with LocalSockets and a fake
ASGI send, and install_signal_handlers() chaining to the previous SIGINT/SIGTERM handlers
(saved and restored around every test)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import pytest
from channels.layers import InMemoryChannelLayer
from django.test import override_settings

from wsgroups import ops
from wsgroups import shutdown as shutdown_module
from wsgroups.ids import make_id
from wsgroups.outbox import LocalSocket, SocketState
from wsgroups.shutdown import install_signal_handlers, shutdown
from wsgroups.transport import Transport

ACCEPT = {"type": "websocket.accept"}
GOING_AWAY = {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}


class Leaves(list):
    def __init__(self):
        super().__init__()
        self.stopped = []


@pytest.fixture
def leaves(runtime, monkeypatch):
    """runtime.leave replaced: records, at each call, which sockets had finished closing
    (and in ``calls.stopped`` whether the stop was to be recorded)."""
    calls = Leaves()

    async def fake_leave(*, stopped=True):
        calls.append({sock.id: sock.closed.is_set() for sock in list(runtime.table.by_id.values())})
        calls.stopped.append(stopped)

    monkeypatch.setattr(runtime, "leave", fake_leave)
    return calls


def open_socket(runtime, socket_id):
    sent = []

    async def send(message):
        sent.append(dict(message))

    sock = LocalSocket(
        socket_id, "/ws", send, runtime.loop, limit=100, counters=runtime.stats, on_overflow=lambda sock: None
    )
    sock.group = "chat"
    sock.accept(dict(ACCEPT))
    runtime.table.add(sock)
    return sock, sent


# --- shutdown() -----------------------------------------------------------------------------


@override_settings(WSGROUPS={"SHUTDOWN_TIMEOUT": 2.0})
def test_shutdown_closes_every_socket_with_1001_waits_for_them_then_leaves(runtime, leaves, wslog):
    socks = [open_socket(runtime, make_id(60, n)) for n in (1, 2, 3)]
    for delay, (sock, _) in zip((0.01, 0.03, 0.05), socks, strict=True):
        runtime.loop.call_later(delay, sock.closed.set)  # their disconnect handlers finish
    started = time.monotonic()
    runtime.loop.run_until_complete(shutdown(runtime))
    elapsed = time.monotonic() - started
    assert runtime.shutting_down is True
    assert [sent for _, sent in socks] == [[ACCEPT, GOING_AWAY]] * 3
    assert leaves == [{sock.id: True for sock, _ in socks}]  # left only after all had closed
    assert leaves.stopped == [True]
    assert 0.04 <= elapsed < 1.5
    assert any(r.getMessage() == "wsgroups: closed 3 sockets for shutdown" for r in wslog.records)


@override_settings(WSGROUPS={"SHUTDOWN_TIMEOUT": 0.05})
def test_shutdown_waits_at_most_shutdown_timeout_then_leaves_anyway(runtime, leaves, wslog):
    quick, quick_sent = open_socket(runtime, make_id(60, 1))
    stuck, stuck_sent = open_socket(runtime, make_id(60, 2))
    busy, _ = open_socket(runtime, make_id(60, 3))
    runtime.loop.call_soon(quick.closed.set)

    def handler_starts():  # what the serving task does once the client answered the close
        busy.state = SocketState.CLOSED
        runtime.table.remove(busy)

    runtime.loop.call_soon(handler_starts)
    started = time.monotonic()
    runtime.loop.run_until_complete(shutdown(runtime))
    elapsed = time.monotonic() - started
    assert 0.04 <= elapsed < 1.0
    assert quick_sent == stuck_sent == [ACCEPT, GOING_AWAY]
    assert leaves == [{quick.id: True, stuck.id: False}]
    # The stuck socket's handler never started: the reaper of this process runs it, not this
    # process; the busy one's handler is running here (its registry row is being closed).
    assert stuck.reaped and not quick.reaped and not busy.reaped
    assert leaves.stopped == [False]
    warnings = [r.getMessage() for r in wslog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "1 sockets did not finish closing within 0.1s",
        "wsgroups: 1 sockets are left to the process that reaps this one, which runs their disconnect handlers",
    ]
    # No waiter is left behind on the loop.
    pending = [t for t in asyncio.all_tasks(runtime.loop) if not t.done()]
    assert pending == []


def test_shutdown_without_sockets_just_leaves(runtime, leaves, wslog):
    runtime.loop.run_until_complete(shutdown(runtime))
    assert leaves == [{}]
    assert runtime.shutting_down is True
    assert any(r.getMessage() == "wsgroups: closed 0 sockets for shutdown" for r in wslog.records)


def test_shutdown_does_not_close_a_socket_twice(runtime, leaves):
    sock, sent = open_socket(runtime, make_id(60, 1))
    sock.close(4000, "already going")
    sock.closed.set()
    runtime.loop.run_until_complete(shutdown(runtime))
    assert sent == [ACCEPT, {"type": "websocket.close", "code": 4000, "reason": "already going"}]
    assert len(leaves) == 1


# --- install_signal_handlers() --------------------------------------------------------------


@pytest.fixture
def saved_signals():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def previous(saved_signals):
    """Python handlers installed as the server's own; they record the signals they get."""
    calls = []

    def server_handler(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGINT, server_handler)
    signal.signal(signal.SIGTERM, server_handler)
    return calls


@pytest.fixture
def shutdowns(monkeypatch):
    calls = []

    async def fake_shutdown(rt):
        await asyncio.sleep(0)
        calls.append(rt)

    monkeypatch.setattr(shutdown_module, "shutdown", fake_shutdown)
    return calls


def let_loop_run(runtime):
    runtime.loop.run_until_complete(asyncio.sleep(0.02))


def test_signal_shuts_down_then_chains_to_the_previous_handler(runtime, previous, shutdowns):
    server_handler = signal.getsignal(signal.SIGTERM)
    install_signal_handlers(runtime)
    assert runtime.signals_installed is True
    assert signal.getsignal(signal.SIGTERM) is not server_handler  # ours now
    assert signal.getsignal(signal.SIGINT) is not server_handler
    signal.raise_signal(signal.SIGTERM)
    assert runtime.shutting_down is True
    assert previous == []  # not before our sockets are closed
    let_loop_run(runtime)
    assert shutdowns == [runtime]
    assert previous == [signal.SIGTERM]


def test_second_signal_during_shutdown_chains_at_once(runtime, previous, shutdowns):
    install_signal_handlers(runtime)
    ours = signal.getsignal(signal.SIGINT)
    ours(signal.SIGINT, None)
    ours(signal.SIGINT, None)
    assert previous == [signal.SIGINT]  # the second one went straight through
    let_loop_run(runtime)
    assert shutdowns == [runtime]  # one shutdown only
    assert previous == [signal.SIGINT, signal.SIGINT]


def test_signal_handlers_are_installed_only_once(runtime, previous, shutdowns):
    install_signal_handlers(runtime)
    ours = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    install_signal_handlers(runtime)
    assert {signum: signal.getsignal(signum) for signum in ours} == ours
    ours[signal.SIGTERM](signal.SIGTERM, None)
    let_loop_run(runtime)
    # Had the second call wrapped our handler, the chain would run our handler again, not the server's once.
    assert shutdowns == [runtime]
    assert previous == [signal.SIGTERM]


def test_chaining_to_a_non_callable_previous_handler_reinstalls_it(runtime, saved_signals, shutdowns):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    install_signal_handlers(runtime)
    ours = signal.getsignal(signal.SIGINT)
    assert ours is not signal.SIG_IGN
    ours(signal.SIGINT, None)
    let_loop_run(runtime)
    assert shutdowns == [runtime]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back and re-raised (ignored)


def test_install_outside_the_main_thread_does_nothing(runtime, previous):
    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=install_signal_handlers, args=(runtime,))
    thread.start()
    thread.join()
    assert runtime.signals_installed is False
    assert signal.getsignal(signal.SIGTERM) is before


# --- read_inbox_to_end() ----------------------------------------------------------------------


def test_reading_the_inbox_to_its_end_applies_what_was_sent_before_and_only_then_returns():
    class SlowRecorder:
        """Applies each batch slowly, as a busy process would."""

        def __init__(self):
            self.ops = []

        async def __call__(self, batch, reply_to):
            await asyncio.sleep(0.02)
            self.ops.extend(batch)
            return []

    class Directory:
        async def channel_for_block(self, block):
            return None

    async def main():
        layer = InMemoryChannelLayer()
        loop = asyncio.get_running_loop()
        stopping, sender = Transport(loop, layer, Directory()), Transport(loop, layer, Directory())
        await stopping.start()
        await sender.start()
        recorder = SlowRecorder()
        stopping.on_ops = recorder
        sent = [ops.Send(make_id(61, n), f"m{n}") for n in range(1, 6)]
        for op in sent:  # five batches: each waits in the channel while the one before is applied
            sender.queue(stopping.channel_name, op)
            assert await sender.drain(1) is True
        assert recorder.ops != sent  # not all applied yet: they wait in the channel
        assert await shutdown_module.read_inbox_to_end(stopping, 2.0) is True
        assert recorder.ops == sent
        assert stopping._futures == {}  # its mark's future is forgotten
        await sender.stop()
        await stopping.stop()

    asyncio.run(main())


def test_reading_the_inbox_gives_up_after_its_timeout():
    class Directory:
        async def channel_for_block(self, block):
            return None

    async def main():
        layer = InMemoryChannelLayer()
        transport = Transport(asyncio.get_running_loop(), layer, Directory())
        await transport.start()
        blocked = asyncio.Event()

        async def stuck(batch, reply_to):  # a batch ahead of the mark that never finishes
            await blocked.wait()
            return []

        transport.on_ops = stuck
        batch = [ops.encode(ops.Send(make_id(61, 1), "stuck"))]
        await layer.send(transport.channel_name, {"type": ops.BATCH_TYPE, "ops": batch, "reply_to": ""})
        started = time.monotonic()
        assert await shutdown_module.read_inbox_to_end(transport, 0.2) is False
        assert 0.15 < time.monotonic() - started < 1.5
        blocked.set()
        await transport.stop()

    asyncio.run(main())
