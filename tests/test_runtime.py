"""Unit tests of wsgroups.runtime.Runtime: the refusal-log throttle, ID allocation from
blocks, registry batching, run_on_loop, cluster_transport and the overflow callback.
The cluster's database functions are monkeypatched; nothing is started."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from django.test import override_settings

from wsgroups import runtime as runtime_module
from wsgroups.ids import make_id, split_id
from wsgroups.limits import REFUSAL_LOG_INTERVAL
from wsgroups.outbox import LocalSocket, SocketState
from wsgroups.runtime import cluster_transport

ACCEPT = {"type": "websocket.accept"}


def run(runtime, coroutine):
    return runtime.loop.run_until_complete(coroutine)


@pytest.fixture
def blocks(monkeypatch):
    """cluster.allocate_block handing out the given blocks in turn; records its calls."""
    calls = []
    supply = []

    def allocate_block(process_id):
        calls.append(process_id)
        return supply.pop(0)

    monkeypatch.setattr(runtime_module.cluster, "allocate_block", allocate_block)
    return supply, calls


def local_socket(runtime, socket_id, sent, group="g"):
    async def send(message):
        sent.append(dict(message))

    sock = LocalSocket(
        socket_id, "/ws", send, runtime.loop, limit=100, counters=runtime.stats, on_overflow=lambda sock: None
    )
    sock.group = group
    return sock


# --- log_refusal ---------------------------------------------------------------------------


def test_log_refusal_logs_once_per_interval_then_reports_the_suppressed_count(runtime, wslog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(runtime.loop, "time", lambda: now[0])

    def warnings():
        return [r.getMessage() for r in wslog.records if r.levelno == logging.WARNING]

    runtime.log_refusal("refused %s", "one")
    assert warnings() == ["refused one"]
    now[0] += 1
    runtime.log_refusal("refused %s", "two")
    now[0] += REFUSAL_LOG_INTERVAL - 2
    runtime.log_refusal("refused %s", "three")
    assert warnings() == ["refused one"]  # both inside the interval: counted, not logged
    now[0] += 1.5  # 10.5 s after the first line
    runtime.log_refusal("refused %s", "four")
    assert warnings()[1] == "refused four (2 more refusals in the last 10 s not logged)"
    now[0] += REFUSAL_LOG_INTERVAL
    runtime.log_refusal("refused %s", "five")
    assert warnings()[2] == "refused five"  # the count starts again from zero
    assert len(warnings()) == 3


# --- IDs ---------------------------------------------------------------------------------


def test_next_id_before_start_raises(runtime, blocks):
    with pytest.raises(RuntimeError, match="start"):
        run(runtime, runtime.next_id())
    assert blocks[1] == []


def test_next_id_allocates_consecutive_ids_within_one_block(runtime, blocks):
    supply, calls = blocks
    supply.extend([5, 6])
    runtime.process_id = 7

    async def three():
        return [await runtime.next_id() for _ in range(3)]

    assert run(runtime, three()) == [make_id(5, 1), make_id(5, 2), make_id(5, 3)]
    assert calls == [7]
    assert runtime.owns_block(5)
    assert not runtime.owns_block(6)


def test_concurrent_next_id_calls_share_one_block_and_never_repeat(runtime, blocks):
    supply, calls = blocks
    supply.extend([5, 6])
    runtime.process_id = 7

    async def many():
        return await asyncio.gather(*(runtime.next_id() for _ in range(20)))

    ids = run(runtime, many())
    assert sorted(ids) == [make_id(5, n) for n in range(1, 21)]
    assert calls == [7]


def test_next_id_takes_a_new_block_when_the_sequence_runs_out(runtime, blocks, monkeypatch):
    supply, calls = blocks
    supply.extend([5, 9, 11])
    monkeypatch.setattr(runtime_module, "MAX_SEQUENCE", 2)
    runtime.process_id = 7

    async def five():
        return [await runtime.next_id() for _ in range(5)]

    ids = run(runtime, five())
    assert ids == [make_id(5, 1), make_id(5, 2), make_id(9, 1), make_id(9, 2), make_id(11, 1)]
    assert calls == [7, 7, 7]
    assert all(runtime.owns_block(block) for block in (5, 9, 11))
    assert not runtime.owns_block(10)


def test_rejoin_registers_again_and_takes_a_new_block(runtime, blocks, monkeypatch):
    supply, calls = blocks
    supply.extend([5, 8])
    registered = []

    def register_process(kind, channel_name):
        registered.append((kind, channel_name))
        return 12

    monkeypatch.setattr(runtime_module.cluster, "register_process", register_process)
    runtime.process_id = 7

    async def body():
        first = await runtime.next_id()
        await runtime.rejoin()
        return first, await runtime.next_id()

    first, second = run(runtime, body())
    assert registered == [("server", "")]
    assert runtime.process_id == 12
    assert calls == [7, 12]
    assert (split_id(first), split_id(second)) == ((5, 1), (8, 1))


# --- registry writes ----------------------------------------------------------------------


def test_add_and_remove_queue_registry_writes_and_flush_releases_held_sockets(runtime, monkeypatch):
    writes = []
    monkeypatch.setattr(
        runtime_module.cluster,
        "write_registry",
        lambda pid, opened, closed, rooms: writes.append((pid, opened, closed)),
    )
    runtime.process_id = 3
    sent_a, sent_b = [], []
    a = local_socket(runtime, make_id(5, 1), sent_a)
    b = local_socket(runtime, make_id(5, 2), sent_b)
    for sock in (a, b):
        sock.accept(dict(ACCEPT), held=True)
        runtime.add(sock)
    assert runtime._registry_wakeup.is_set()
    assert sent_a == [] and sent_b == []  # the 101 waits for the registry row
    assert runtime.table.get(a.id) is a
    runtime.remove(b)
    runtime.remove(b)  # a second remove is not a second close
    runtime.remove(local_socket(runtime, make_id(5, 3), []))  # never added: nothing to record
    assert runtime.table.get(b.id) is None

    run(runtime, runtime.flush_registry())
    assert len(writes) == 1
    pid, opened, closed = writes[0]
    assert (pid, list(opened), list(closed)) == (3, [a, b], [b])
    assert sent_a == [ACCEPT] and sent_b == [ACCEPT]
    assert not a.held and not b.held

    run(runtime, runtime.flush_registry())
    assert len(writes) == 1  # nothing pending: no write


def test_room_changes_wake_the_registry_writer_and_go_out_with_the_next_batch(runtime, monkeypatch):
    writes = []
    monkeypatch.setattr(
        runtime_module.cluster,
        "write_registry",
        lambda pid, opened, closed, rooms: writes.append((list(opened), list(closed), dict(rooms))),
    )
    runtime.process_id = 3
    a = local_socket(runtime, make_id(5, 1), [])
    b = local_socket(runtime, make_id(5, 2), [])
    for sock in (a, b):
        sock.accept(dict(ACCEPT))
        runtime.table.add(sock)
    assert not runtime._registry_wakeup.is_set()
    runtime.rooms.join(a, "x")
    assert runtime._registry_wakeup.is_set()
    runtime.rooms.join(a, "y")
    runtime.rooms.join(b, "x")
    run(runtime, runtime.flush_registry())
    assert writes == [([], [], {a.id: ["x", "y"], b.id: ["x"]})]
    runtime._registry_wakeup.clear()
    runtime.rooms.join(a, "x", {"meta": "only"})  # same rooms: nothing to write
    assert not runtime._registry_wakeup.is_set()
    runtime.rooms.leave(b.id, "x")
    run(runtime, runtime.flush_registry())
    assert writes[1] == ([], [], {b.id: []})
    run(runtime, runtime.flush_registry())
    assert len(writes) == 2  # nothing changed since


def test_flush_registry_releases_the_sockets_when_the_write_fails(runtime, wslog, monkeypatch):
    calls = []

    def write_registry(pid, opened, closed, rooms):
        calls.append((pid, list(opened), list(closed)))
        raise RuntimeError("database down")

    monkeypatch.setattr(runtime_module.cluster, "write_registry", write_registry)
    runtime.process_id = 3
    sent = []
    sock = local_socket(runtime, make_id(5, 1), sent)
    sock.accept(dict(ACCEPT), held=True)
    runtime.add(sock)
    old = local_socket(runtime, make_id(5, 2), [])
    runtime.table.add(old)
    runtime.remove(old)

    run(runtime, runtime.flush_registry())
    assert calls == [(3, [sock], [old])]
    assert sent == [ACCEPT]
    assert not sock.held
    errors = [r for r in wslog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "writing the socket registry failed for 2 sockets" in errors[0].getMessage()
    run(runtime, runtime.flush_registry())  # the failed rows are not retried
    assert len(calls) == 1


def test_flush_registry_releases_the_sockets_when_cancelled_during_the_write(runtime, monkeypatch):
    writing, finish = threading.Event(), threading.Event()

    def write_registry(pid, opened, closed, rooms):
        writing.set()
        finish.wait(5)

    monkeypatch.setattr(runtime_module.cluster, "write_registry", write_registry)
    runtime.process_id = 3
    sent = []
    sock = local_socket(runtime, make_id(5, 1), sent)
    sock.accept(dict(ACCEPT), held=True)
    runtime.add(sock)

    async def body():
        task = asyncio.ensure_future(runtime.flush_registry())
        while not writing.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        run(runtime, body())
    finally:
        finish.set()
    assert sent == [ACCEPT]
    assert not sock.held


def test_leave_before_start_records_nothing(runtime, monkeypatch):
    stops = []
    monkeypatch.setattr(runtime_module.cluster, "stop_process", stops.append)
    monkeypatch.setattr(runtime_module.cluster, "write_registry", lambda *args: stops.append(args))
    runtime.process_id = 3
    runtime.add(local_socket(runtime, make_id(5, 1), []))
    run(runtime, runtime.leave())
    assert stops == []


@pytest.mark.parametrize("stopped", [True, False])
def test_leave_records_the_stop_unless_a_reaper_is_to_take_over(runtime, monkeypatch, stopped):
    stops = []
    monkeypatch.setattr(runtime_module.cluster, "stop_process", stops.append)
    monkeypatch.setattr(runtime_module.cluster, "write_registry", lambda *args: None)
    monkeypatch.setattr(runtime, "_started", True)
    monkeypatch.setattr(runtime, "transport", None)
    runtime.process_id = 3
    run(runtime, runtime.leave(stopped=stopped))
    assert stops == ([3] if stopped else [])


# --- run_on_loop ------------------------------------------------------------------------


def test_run_on_loop_from_another_thread_runs_on_the_loop(runtime):
    seen = []

    def func():
        seen.append((threading.current_thread(), asyncio.get_running_loop()))
        return 42

    def from_thread():
        return threading.current_thread(), runtime.run_on_loop(func)

    async def body():
        return await asyncio.to_thread(from_thread)

    caller, result = run(runtime, body())
    assert result == 42
    assert caller is not threading.main_thread()
    assert seen == [(threading.main_thread(), runtime.loop)]


def test_run_on_loop_on_the_loop_runs_at_once(runtime):
    seen = []

    async def body():
        result = runtime.run_on_loop(lambda: seen.append("ran") or "done")
        seen.append("after")
        return result

    assert run(runtime, body()) == "done"
    assert seen == ["ran", "after"]


def test_run_on_loop_raises_in_the_caller_what_the_function_raised(runtime):
    def func():
        raise KeyError("on the loop")

    def from_thread():
        try:
            runtime.run_on_loop(func)
        except KeyError as exc:
            return exc.args[0]
        return "nothing raised"

    async def body():
        return await asyncio.to_thread(from_thread)

    assert run(runtime, body()) == "on the loop"


# --- cluster_transport ------------------------------------------------------------------


def test_cluster_transport_is_none_without_the_channel_layer(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(runtime_module, "get_transport", lambda: sentinel)
    with override_settings(CHANNEL_LAYERS={}):
        assert cluster_transport() is None
    with override_settings(WSGROUPS={"CHANNEL_LAYER": "missing"}):
        assert cluster_transport() is None
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "x"}}, WSGROUPS={}):
        assert cluster_transport() is sentinel


# --- new_socket ---------------------------------------------------------------------------


@override_settings(WSGROUPS={"OUTGOING_BUFFER": 2, "CLOSE_TIMEOUT": 0.01})
def test_new_socket_overflow_counts_outbox_overflows_and_logs(runtime, blocks, wslog):
    supply, _ = blocks
    supply.append(21)
    runtime.process_id = 1
    sent = []

    async def send(message):
        sent.append(dict(message))

    async def body():
        sock = await runtime.new_socket("/chat", send, "10.0.0.1")
        sock.accept(dict(ACCEPT), held=True)  # nothing drains: the outbox fills up
        sock.enqueue({"type": "websocket.send", "text": "1"})
        assert runtime.stats["outbox_overflows"] == 0
        sock.enqueue({"type": "websocket.send", "text": "2"})
        await asyncio.sleep(0.05)  # let the forced close run
        return sock

    sock = run(runtime, body())
    assert (sock.id, sock.path, sock.remote_addr, sock.limit) == (make_id(21, 1), "/chat", "10.0.0.1", 2)
    assert sock.counters is runtime.stats
    assert runtime.stats["outbox_overflows"] == 1
    assert sock.state is SocketState.CLOSING
    assert sent == [{"type": "websocket.close", "code": 1013, "reason": "outgoing buffer full: client too slow"}]
    warnings = [r.getMessage() for r in wslog.records if r.levelno == logging.WARNING]
    assert f"WebSocket {sock.id}: outgoing buffer of 2 frames full; closing with 1013" in warnings
