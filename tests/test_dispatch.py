"""Unit tests of wsgroups.dispatch: where handlers run, WebSocket.current, worker mode with a
fake transport, and the worker's side of a handler call. No server, no Redis."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from django.test import override_settings

from wsgroups import dispatch as dispatch_module
from wsgroups import ops
from wsgroups.cluster import ProcessInfo
from wsgroups.dispatch import dispatch, handle_for_server, handler_socket, run_disconnect, run_handler
from wsgroups.exceptions import TransportError
from wsgroups.handlers import Handler, HandlerRegistry
from wsgroups.ids import make_id
from wsgroups.transport import WORKER_CHANNEL
from wsgroups.websocket import WebSocket, current_socket

SOCKET_ID = make_id(4242, 7)
OTHER_ID = make_id(4242, 8)


# --- fixtures and fakes ------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """A fresh handler registry in place of the process-wide one."""
    fresh = HandlerRegistry()
    monkeypatch.setattr(dispatch_module, "handle", fresh)
    return fresh


def run(runtime, coroutine):
    return runtime.loop.run_until_complete(coroutine)


class FakeTransport:
    """What dispatch uses of a Transport: futures by token, queue, discard, claim."""

    def __init__(self, loop, claims=True):
        self.loop = loop
        self.claims = claims
        self.queued = []
        self.discarded = []
        self.claimed = []
        self.futures = {}
        self._token = 100

    def future(self):
        self._token += 1
        future = self.loop.create_future()
        self.futures[self._token] = future
        return self._token, future

    def queue(self, destination, op):
        self.queued.append((destination, op))

    def discard(self, token):
        self.discarded.append(token)

    async def claim(self, key):
        self.claimed.append(key)
        return self.claims


class FakeDirectory:
    def __init__(self, live):
        self._live = live
        self.reads = 0

    async def live(self):
        self.reads += 1
        return self._live


def recorder(calls, result=None, fail=None):
    """A sync handler that records what it saw (args, current socket, thread)."""

    def handler(*args):
        calls.append({"args": args, "current": WebSocket.current, "thread": threading.current_thread().name})
        if fail is not None:
            raise fail
        return result

    return handler


# --- handler_socket ----------------------------------------------------------------------


def test_handler_socket_knows_group_and_session_without_the_database():
    # No django_db mark: a query would raise, so these answers come from the object itself.
    ws = handler_socket(SOCKET_ID, "chat", "abc123")
    assert isinstance(ws, WebSocket)
    assert ws.id == SOCKET_ID
    assert ws.group == "chat"
    assert ws.session_key_hint() == "abc123"


def test_handler_socket_treats_an_empty_session_key_as_none():
    ws = handler_socket(SOCKET_ID, "chat", "")
    assert ws.session_key_hint() is None
    assert ws.session is None
    assert ws.group == "chat"


# --- run_handler -------------------------------------------------------------------------


def test_sync_handler_runs_in_a_handler_thread_with_current_set(runtime):
    calls = []
    ws = handler_socket(SOCKET_ID, "g", None)
    ok = run(runtime, run_handler(runtime, Handler.wrap(recorder(calls)), ws, "hello"))
    assert ok is True
    assert len(calls) == 1
    assert calls[0]["args"] == ("hello", ws)
    assert calls[0]["current"] == ws
    assert calls[0]["thread"].startswith("wsgroups-handler")
    assert current_socket.get() is None


def test_async_handler_runs_on_the_loop_with_current_set(runtime):
    seen = []

    async def on_text(message: str, ws):
        seen.append((message, ws, WebSocket.current, asyncio.get_running_loop(), threading.current_thread()))

    ws = handler_socket(SOCKET_ID, "g", None)
    assert Handler.wrap(on_text).is_async
    ok = run(runtime, run_handler(runtime, Handler.wrap(on_text), ws, "hi"))
    assert ok is True
    assert seen == [("hi", ws, ws, runtime.loop, threading.main_thread())]
    assert current_socket.get() is None


def test_run_handler_restores_the_outer_current_socket(runtime):
    outer = handler_socket(OTHER_ID, "g", None)
    inner = handler_socket(SOCKET_ID, "g", None)
    seen = []

    async def on_text(message: str, ws):
        seen.append(WebSocket.current)

    async def body():
        token = current_socket.set(outer)
        try:
            await run_handler(runtime, Handler.wrap(on_text), inner, "x")
            return WebSocket.current
        finally:
            current_socket.reset(token)

    assert run(runtime, body()) == outer
    assert seen == [inner]


def test_sync_handler_exception_returns_false_logs_and_resets_current(runtime, wslog):
    calls = []
    ws = handler_socket(SOCKET_ID, "g", None)
    handler = Handler.wrap(recorder(calls, fail=ValueError("boom")))
    ok = run(runtime, run_handler(runtime, handler, ws, "m"))
    assert ok is False
    assert len(calls) == 1
    assert current_socket.get() is None
    errors = [r for r in wslog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"failed on WebSocket {SOCKET_ID}" in errors[0].getMessage()
    assert "handler" in errors[0].getMessage()  # the handler's qualified name
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], ValueError)


def test_async_handler_exception_returns_false_and_logs(runtime, wslog):
    async def on_binary(data: bytes, ws):
        raise KeyError("nope")

    ws = handler_socket(SOCKET_ID, "g", None)
    ok = run(runtime, run_handler(runtime, Handler.wrap(on_binary), ws, b"x"))
    assert ok is False
    assert current_socket.get() is None
    errors = [r for r in wslog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "on_binary" in errors[0].getMessage()
    assert isinstance(errors[0].exc_info[1], KeyError)


def test_cancellation_of_a_handler_is_not_swallowed(runtime):
    async def on_text(message: str, ws):
        raise asyncio.CancelledError

    ws = handler_socket(SOCKET_ID, "g", None)
    with pytest.raises(asyncio.CancelledError):
        run(runtime, run_handler(runtime, Handler.wrap(on_text), ws, "x"))
    assert current_socket.get() is None


# --- dispatch ----------------------------------------------------------------------------


@override_settings(WSGROUPS={"HANDLER_MODE": "inline"})
def test_inline_dispatch_runs_data_handler_here_even_with_a_transport(runtime):
    runtime.transport = FakeTransport(runtime.loop)
    calls = []
    ws = handler_socket(SOCKET_ID, "g", "key")
    ok = run(runtime, dispatch(runtime, Handler.wrap(recorder(calls)), "text", ws, "payload"))
    assert ok is True
    assert [c["args"] for c in calls] == [("payload", ws)]
    assert runtime.transport.queued == []


@override_settings(WSGROUPS={"HANDLER_MODE": "inline"})
def test_inline_dispatch_of_disconnect_passes_only_the_socket(runtime):
    calls = []
    ws = handler_socket(SOCKET_ID, "g", None)
    ok = run(runtime, dispatch(runtime, Handler.wrap(recorder(calls)), "disconnect", ws))
    assert ok is True
    assert [c["args"] for c in calls] == [(ws,)]


@override_settings(WSGROUPS={"HANDLER_MODE": "inline"})
def test_inline_dispatch_reports_a_failing_handler(runtime, wslog):
    ws = handler_socket(SOCKET_ID, "g", None)
    ok = run(runtime, dispatch(runtime, Handler.wrap(recorder([], fail=RuntimeError("x"))), "text", ws, "p"))
    assert ok is False


@pytest.mark.parametrize("answer", [True, False])
@override_settings(WSGROUPS={"HANDLER_MODE": "worker"})
def test_worker_dispatch_queues_a_handle_and_returns_the_workers_answer(runtime, answer):
    transport = runtime.transport = FakeTransport(runtime.loop)
    calls = []
    ws = handler_socket(SOCKET_ID, "chat", "sess")

    async def body():
        task = asyncio.ensure_future(dispatch(runtime, Handler.wrap(recorder(calls)), "text", ws, "hi"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # waiting for the worker
        assert len(transport.queued) == 1
        (token,) = transport.futures
        transport.futures[token].set_result(answer)
        return token, await task

    token, result = run(runtime, body())
    assert result is answer
    assert transport.queued == [(WORKER_CHANNEL, ops.Handle("chat", "text", SOCKET_ID, "hi", "sess", token))]
    assert transport.discarded == [token]
    assert calls == []  # nothing ran in this process


@override_settings(WSGROUPS={"HANDLER_MODE": "worker"})
def test_worker_dispatch_reports_false_when_the_transport_fails_the_call(runtime):
    """The transport fails a Handle's future with TransportError when the worker channel
    is gone or the layer does not take the message; dispatch must report False (so the
    server closes the socket with 1011), not raise out of the socket's serve loop."""
    transport = runtime.transport = FakeTransport(runtime.loop)
    ws = handler_socket(SOCKET_ID, "chat", None)

    async def body():
        task = asyncio.ensure_future(dispatch(runtime, Handler.wrap(recorder([])), "text", ws, "hi"))
        await asyncio.sleep(0)
        for future in transport.futures.values():
            future.set_exception(TransportError("the worker that was to run this handler is gone"))
        return await task

    assert run(runtime, body()) is False
    assert transport.discarded == list(transport.futures)


@override_settings(WSGROUPS={"HANDLER_MODE": "worker"})
def test_worker_dispatch_of_disconnect_sends_no_payload(runtime):
    transport = runtime.transport = FakeTransport(runtime.loop)
    ws = handler_socket(SOCKET_ID, "chat", None)

    async def body():
        task = asyncio.ensure_future(dispatch(runtime, Handler.wrap(recorder([])), "disconnect", ws))
        await asyncio.sleep(0)
        for future in transport.futures.values():
            future.set_result(True)
        return await task

    assert run(runtime, body()) is True
    ((destination, op),) = transport.queued
    assert destination == WORKER_CHANNEL
    assert (op.kind, op.payload, op.session_key, op.socket_id) == ("disconnect", None, None, SOCKET_ID)


@override_settings(WSGROUPS={"HANDLER_MODE": "worker", "QUERY_TIMEOUT": 0.01})
def test_worker_dispatch_keeps_waiting_while_a_worker_lives(runtime):
    transport = runtime.transport = FakeTransport(runtime.loop)
    runtime.directory = FakeDirectory({9: ProcessInfo(9, "worker-channel", "worker")})
    ws = handler_socket(SOCKET_ID, "chat", None)

    async def body():
        task = asyncio.ensure_future(dispatch(runtime, Handler.wrap(recorder([])), "binary", ws, b"x"))
        await asyncio.sleep(0.05)
        assert not task.done()
        for future in transport.futures.values():
            future.set_result(True)
        return await task

    assert run(runtime, body()) is True
    assert runtime.directory.reads >= 2


@override_settings(WSGROUPS={"HANDLER_MODE": "worker", "QUERY_TIMEOUT": 0.01})
def test_worker_dispatch_fails_and_logs_when_no_worker_is_alive(runtime, wslog):
    transport = runtime.transport = FakeTransport(runtime.loop)
    runtime.directory = FakeDirectory({3: ProcessInfo(3, "server-channel", "server")})
    ws = handler_socket(SOCKET_ID, "chat", None)
    ok = run(runtime, asyncio.wait_for(dispatch(runtime, Handler.wrap(recorder([])), "text", ws, "x"), 2))
    assert ok is False
    assert len(transport.queued) == 1
    assert transport.discarded == list(transport.futures)
    assert any("no 'runworker wsgroups' process is alive" in r.getMessage() for r in wslog.records)


@override_settings(WSGROUPS={"HANDLER_MODE": "worker"})
def test_worker_mode_runs_here_in_a_worker_process_or_without_transport(runtime):
    calls = []
    ws = handler_socket(SOCKET_ID, "g", None)
    handler = Handler.wrap(recorder(calls))
    # No transport (no channel layer): nobody to hand the call to.
    assert run(runtime, dispatch(runtime, handler, "text", ws, "a")) is True
    # A worker runs the calls it takes itself.
    runtime.transport = FakeTransport(runtime.loop)
    runtime.kind = "worker"
    assert run(runtime, dispatch(runtime, handler, "text", ws, "b")) is True
    assert [c["args"][0] for c in calls] == ["a", "b"]
    assert runtime.transport.queued == []


# --- handle_for_server -------------------------------------------------------------------


def _register(registry, group, seen):
    @registry.websocket(group)
    async def on_text(message: str, ws):
        seen.append(("text", message, ws.id, ws.group, ws.session_key_hint(), WebSocket.current))

    @registry.websocket(group)
    async def on_binary(data: bytes, ws):
        seen.append(("binary", data, ws.id, ws.group, ws.session_key_hint(), WebSocket.current))

    @registry.websocket_disconnect(group)
    async def on_disconnect(ws):
        seen.append(("disconnect", None, ws.id, ws.group, ws.session_key_hint(), WebSocket.current))


@pytest.mark.parametrize(
    ("kind", "payload"),
    [("text", "hello"), ("binary", b"\x00\x01"), ("disconnect", None)],
)
def test_handle_for_server_runs_the_right_handler_and_replies(runtime, registry, kind, payload):
    seen = []
    _register(registry, "room", seen)
    transport = runtime.transport = FakeTransport(runtime.loop)
    op = ops.Handle("room", kind, SOCKET_ID, payload, "sk", 55)
    run(runtime, handle_for_server(runtime, op, "server-chan"))
    assert len(seen) == 1
    got_kind, got_payload, socket_id, group, session_key, current = seen[0]
    assert (got_kind, got_payload, socket_id, group, session_key) == (kind, payload, SOCKET_ID, "room", "sk")
    assert current == WebSocket(SOCKET_ID)
    assert transport.claimed == ["server-chan:55"]
    assert transport.queued == [("server-chan", ops.Reply(55, True))]


def test_handle_for_server_replies_false_when_the_handler_raises(runtime, registry, wslog):
    @registry.websocket("room")
    def on_text(message: str, ws):
        raise RuntimeError("handler bug")

    transport = runtime.transport = FakeTransport(runtime.loop)
    run(runtime, handle_for_server(runtime, ops.Handle("room", "text", SOCKET_ID, "m", None, 8), "srv"))
    assert transport.queued == [("srv", ops.Reply(8, False))]
    assert any(r.levelno == logging.ERROR for r in wslog.records)


@override_settings(WSGROUPS={"HANDLER_MODE": "worker"})
def test_a_reaped_sockets_recorded_rooms_travel_to_the_worker_and_its_handler_lists_them(runtime, registry):
    transport = runtime.transport = FakeTransport(runtime.loop)
    seen = []

    @registry.websocket_disconnect("room")
    def on_disconnect(ws):
        seen.append(ws.rooms())

    async def body():
        task = asyncio.ensure_future(run_disconnect(runtime, SOCKET_ID, "room", None, ["b", "a"]))
        while not transport.queued:
            await asyncio.sleep(0)
        (token,) = transport.futures
        transport.futures[token].set_result(True)
        await task
        return token

    token = run(runtime, body())
    [(channel, op)] = transport.queued
    assert (channel, op) == (WORKER_CHANNEL, ops.Handle("room", "disconnect", SOCKET_ID, None, None, token, ["a", "b"]))
    transport.queued.clear()
    # In the worker: no process holds the socket any more, yet ws.rooms() lists its rooms.
    run(runtime, handle_for_server(runtime, ops.decode(ops.encode(op)), "srv"))
    assert seen == [{"a", "b"}]


def test_handle_for_server_without_disconnect_handler_replies_true(runtime, registry):
    seen = []

    @registry.websocket("room")
    def on_text(message: str, ws):
        seen.append(message)

    transport = runtime.transport = FakeTransport(runtime.loop)
    run(runtime, handle_for_server(runtime, ops.Handle("room", "disconnect", SOCKET_ID, None, None, 9), "srv"))
    assert seen == []
    assert transport.queued == [("srv", ops.Reply(9, True))]


def test_second_delivery_that_loses_the_claim_runs_nothing(runtime, registry):
    seen = []
    _register(registry, "room", seen)
    transport = runtime.transport = FakeTransport(runtime.loop, claims=False)
    run(runtime, handle_for_server(runtime, ops.Handle("room", "text", SOCKET_ID, "x", None, 12), "srv"))
    assert transport.claimed == ["srv:12"]
    assert seen == []
    assert transport.queued == []


def test_handle_for_server_without_transport_or_reply_channel_only_runs(runtime, registry):
    seen = []
    _register(registry, "room", seen)
    run(runtime, handle_for_server(runtime, ops.Handle("room", "text", SOCKET_ID, "a", None, 1), "srv"))
    transport = runtime.transport = FakeTransport(runtime.loop)
    run(runtime, handle_for_server(runtime, ops.Handle("room", "text", SOCKET_ID, "b", None, 2), ""))
    assert [entry[1] for entry in seen] == ["a", "b"]
    assert transport.queued == []


# --- run_disconnect ----------------------------------------------------------------------


@override_settings(WSGROUPS={"HANDLER_MODE": "inline"})
def test_run_disconnect_runs_the_groups_disconnect_handler_once(runtime, registry):
    seen = []
    _register(registry, "room", seen)
    run(runtime, run_disconnect(runtime, SOCKET_ID, "room", "sess"))
    assert [entry[:5] for entry in seen] == [("disconnect", None, SOCKET_ID, "room", "sess")]


@override_settings(WSGROUPS={"HANDLER_MODE": "inline"})
def test_run_disconnect_runs_sync_disconnect_handler_in_a_handler_thread(runtime, registry):
    calls = []
    registry.websocket_disconnect("room")(recorder(calls))
    run(runtime, run_disconnect(runtime, SOCKET_ID, "room", ""))
    assert len(calls) == 1
    (ws,) = calls[0]["args"]
    assert (ws.id, ws.group, ws.session_key_hint()) == (SOCKET_ID, "room", None)
    assert calls[0]["thread"].startswith("wsgroups-handler")


def test_run_disconnect_does_nothing_for_a_group_without_disconnect_handler(runtime, registry, monkeypatch):
    seen = []

    @registry.websocket("room")
    def on_text(message: str, ws):
        seen.append(message)

    dispatched = []

    async def fake_dispatch(*args):
        dispatched.append(args)
        return True

    monkeypatch.setattr(dispatch_module, "dispatch", fake_dispatch)
    run(runtime, run_disconnect(runtime, SOCKET_ID, "room", None))
    run(runtime, run_disconnect(runtime, SOCKET_ID, "unknown-group", None))
    assert dispatched == []
    assert seen == []
