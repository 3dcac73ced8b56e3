"""``WebSocketApplication`` driven in-process as an ASGI app: a queue for ``receive``, a list
for ``send``, the test project's views and handlers, no channel layer (``CHANNEL_LAYERS={}``),
and a fresh runtime for every test (process registration goes to the test database).
A few go through the project's whole application with ``wsgroups.testing.connect``."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import override_settings

import wsgroups.cluster
import wsgroups.runtime
from wsgroups import WebSocket
from wsgroups.application import WebSocketApplication
from wsgroups.handlers import handle
from wsgroups.models import Connection, Process
from wsgroups.runtime import Runtime
from wsgroups.testing import connect

pytestmark = pytest.mark.django_db(transaction=True)

RESPONSE_EXTENSION = {"websocket.http.response": {}}
CLIENT = ("127.0.0.1", 50000)
WAIT = 5.0  # seconds before a wait for the application gives up (tests normally take milliseconds)


def ws_scope(
    path: str,
    query: bytes = b"",
    *,
    origin: str | None = None,
    extensions: dict[str, Any] | None = RESPONSE_EXTENSION,
    client: tuple[str, int] = CLIENT,
) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"sec-websocket-version", b"13")]
    if origin is not None:
        headers.append((b"origin", origin.encode("latin-1")))
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("127.0.0.1", 8000),
        "client": client,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
        "subprotocols": [],
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


class FakeClient:
    """One connection: the server's side of it as ASGI ``receive`` and ``send``."""

    def __init__(self, app: WebSocketApplication, scope: dict[str, Any]) -> None:
        self.app = app
        self.scope = scope
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def start(self) -> FakeClient:
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(self.app(self.scope, self.incoming.get, self.send))
        return self

    async def finished(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT)

    def frame(self, text: str | None = None, data: bytes | None = None) -> None:
        if text is not None:
            self.incoming.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.incoming.put_nowait({"type": "websocket.receive", "bytes": data})

    def disconnect(self, code: int = 1000) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": code})

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + WAIT
        while not predicate(self.sent):
            if self.task is not None and self.task.done():
                self.task.result()  # raise the application's error, if any
                if not predicate(self.sent):
                    raise AssertionError(f"the application ended; it sent {self.sent!r}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; the application sent {self.sent!r}")
            await asyncio.sleep(0.005)
        return self.sent

    async def wait_for_close(self) -> dict[str, Any]:
        await self.wait_for(lambda sent: any(m["type"] == "websocket.close" for m in sent))
        return next(m for m in self.sent if m["type"] == "websocket.close")

    async def wait_for_texts(self, count: int) -> list[str]:
        await self.wait_for(lambda sent: len(texts(sent)) >= count)
        return texts(self.sent)

    async def connect(self) -> dict[str, Any]:
        """Start, wait for the 101 and the view's greeting (tests/wsapp ``upgrade``); return it."""
        self.start()
        await self.wait_for(lambda sent: len(texts(sent)) >= 1)
        assert self.sent[0]["type"] == "websocket.accept", self.sent
        return dict(json.loads(texts(self.sent)[0]))


def texts(sent: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in sent if m["type"] == "websocket.send" and m.get("text") is not None]


def types(sent: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in sent]


def wsgroups_settings(**overrides: Any) -> dict[str, Any]:
    return {**settings.WSGROUPS, **overrides}


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], list[dict[str, Any]]]:
    """What tests/wsapp's views and handlers recorded (``tests.wsapp.events.record``)."""
    path = tmp_path / "events"
    monkeypatch.setenv("WSGROUPS_TEST_EVENTS", str(path))

    def read(kind: str) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [row for row in rows if row["event"] == kind]

    return read


def _waiting_for_locks(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` retried while SQLite says "database table is locked".

    The test database is SQLite in memory with a shared cache, where a write that meets
    another thread's transaction fails at once instead of waiting as it would on the
    project's file database (``timeout``) or on PostgreSQL.
    """

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        for _ in range(200):
            try:
                return func(*args, **kwargs)
            except OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(0.01)
        return func(*args, **kwargs)

    return run


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebSocketApplication]:
    """The application with no channel layer, a runtime of its own and no signal handlers."""
    monkeypatch.setattr("wsgroups.runtime._runtime", None)
    monkeypatch.setattr("wsgroups.application.install_signal_handlers", lambda runtime: None)
    for name in ("register_process", "allocate_block", "write_registry", "stop_process"):
        monkeypatch.setattr(wsgroups.cluster, name, _waiting_for_locks(getattr(wsgroups.cluster, name)))
    with override_settings(CHANNEL_LAYERS={}):
        yield WebSocketApplication()
        runtime = wsgroups.runtime._runtime
        if runtime is not None:
            runtime.executor.shutdown(wait=True)
            runtime.upgrade_executor.shutdown(wait=True)


def runtime() -> Runtime:
    current = wsgroups.runtime._runtime
    assert current is not None
    return current


def run(scenario: Callable[[], Any]) -> Any:
    """Run ``scenario()`` on a new loop, then take the runtime out of the cluster."""

    async def main() -> Any:
        try:
            return await scenario()
        finally:
            current = wsgroups.runtime._runtime
            if current is not None:
                await current.leave()

    return asyncio.run(main())


async def until(predicate: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name.lower()]


# --- refusals before any view runs ------------------------------------------------------


def test_cross_origin_upgrade_is_refused_with_403_response_when_the_server_can_send_one(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/ws/echo", origin="http://evil.example")).start()
        await client.finished()
        return client.sent, runtime()

    sent, rt = run(scenario)
    assert types(sent) == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 403
    assert sent[1]["body"] == b"Origin not allowed."
    assert header(sent[0]["headers"], b"content-length") == [str(len(sent[1]["body"])).encode()]
    # Refused before the view: the process never joined the cluster, no socket was made.
    assert not rt.started
    assert Process.objects.count() == 0
    assert rt.connections.total == 0


def test_cross_origin_upgrade_is_a_plain_close_without_the_response_extension(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/ws/echo", origin="http://evil.example", extensions=None)).start()
        await client.finished()
        return client.sent

    assert run(scenario) == [{"type": "websocket.close"}]


@pytest.mark.asyncio
async def test_origin_in_allowed_origins_is_upgraded():
    # Through the project's whole application, in-process (wsgroups.testing).
    async with connect("/ws/echo", headers={"Origin": "http://allowed.example"}) as ws:
        assert json.loads(await ws.receive(timeout=WAIT))["group"] == "echo"


def test_view_rejection_is_sent_as_the_views_response(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/reject")).start()
        await client.finished()
        return client.sent

    sent = run(scenario)
    assert types(sent) == ["websocket.http.response.start", "websocket.http.response.body"]
    start, body = sent
    assert (start["status"], start["reason"]) == (418, "Nope Not Today")
    assert header(start["headers"], b"X-Why") == [b"testing"]
    assert any(value.startswith(b"rejected=1") for value in header(start["headers"], b"Set-Cookie"))
    assert body["body"] == b"you shall not pass"


def test_view_rejection_without_the_response_extension_is_a_plain_close(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/reject", extensions=None)).start()
        await client.finished()
        return client.sent

    assert run(scenario) == [{"type": "websocket.close"}]


# --- upgrade and frames -------------------------------------------------------------------


def test_upgrading_view_gets_accept_with_its_headers_and_first_frames(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/wstest")).start()
        await client.wait_for_texts(2)
        client.disconnect()
        await client.finished()
        return client.sent

    sent = run(scenario)
    accept = sent[0]
    assert accept["type"] == "websocket.accept"
    assert accept["subprotocol"] is None
    # Exactly the view's headers: what the project's middleware wrote on HANDLED is not among them.
    assert accept["headers"] == [
        (b"MyHeader", b"MyHeaderData"),
        (b"Set-Cookie", b"MyCookie1=123"),
        (b"Set-Cookie", b"MyCookie2=456"),
    ]
    assert texts(sent) == ["Hello WebSocket!", "Hello again WebSocket!"]


def test_session_cookie_goes_on_the_accept_and_the_socket_is_registered(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/ws/echo", b"session=1"))
        greeting = await client.connect()
        # The 101 waits for the socket's registry row.
        registered = await asyncio.to_thread(lambda: Connection.objects.filter(pk=greeting["id"]).exists())
        client.disconnect()
        await client.finished()
        return client.sent, greeting, registered

    # SessionMiddleware saves the new session again once the view has returned; let that
    # write go first (see _waiting_for_locks: the view's own writes cannot be made to wait).
    with override_settings(WSGROUPS=wsgroups_settings(REGISTRY_INTERVAL=0.1)):
        sent, greeting, registered = run(scenario)
    assert registered
    cookies = header(sent[0]["headers"], b"Set-Cookie")
    assert len(cookies) == 1 and cookies[0].startswith(settings.SESSION_COOKIE_NAME.encode() + b"=")
    assert greeting["id"] == greeting["expected_id"]
    row = Connection.objects.get(pk=greeting["id"])
    assert (row.group, row.path, row.remote_addr) == ("echo", "/ws/echo", CLIENT[0])
    assert row.session_key and cookies[0].startswith(f"{settings.SESSION_COOKIE_NAME}={row.session_key};".encode())
    assert row.state == Connection.State.CLOSED and row.close_code == 1000


@pytest.mark.asyncio
async def test_text_frames_reach_the_handler_and_replies_come_back_in_order(events):
    async with connect("/ws/echo") as ws:
        greeting = json.loads(await ws.receive(timeout=WAIT))
        for i in range(20):
            await ws.send(f"message {i}")
        await ws.send(b"\x00\xff")
        replies = [await ws.receive(timeout=WAIT) for _ in range(21)]
    assert replies == [*(f"message {i}" for i in range(20)), b"\x00\xff"]
    assert ws.close_code == 1000
    assert [row["id"] for row in events("disconnect")] == [greeting["id"]]


def test_text_frame_for_a_group_with_only_a_binary_handler_closes_with_1003(app, events):
    async def scenario():
        client = FakeClient(app, ws_scope("/ws/binary-only"))
        greeting = await client.connect()
        client.frame(data=b"bin")
        client.frame("text")
        close = await client.wait_for_close()
        client.frame(data=b"after the close")
        client.disconnect(1003)
        await client.finished()
        return client.sent, close, greeting

    sent, close, greeting = run(scenario)
    assert close == {"type": "websocket.close", "code": 1003, "reason": "group 'binary-only' has no text handler"}
    assert [m.get("bytes") for m in sent if m["type"] == "websocket.send" and "bytes" in m] == [b"bin"]
    assert sent[-1] == close  # the frame after the close reached no handler
    assert [row["id"] for row in events("disconnect")] == [greeting["id"]]


def test_message_over_max_message_size_closes_with_1009(app):
    limit = settings.WSGROUPS["MAX_MESSAGE_SIZE"]

    async def scenario():
        client = FakeClient(app, ws_scope("/ws/echo"))
        await client.connect()
        client.frame("x" * limit)  # at the limit: echoed
        client.frame("é" * (limit // 2 + 1))  # fewer characters than the limit, more bytes
        close = await client.wait_for_close()
        client.disconnect(1009)
        await client.finished()
        return client.sent, close

    sent, close = run(scenario)
    assert texts(sent)[1:] == ["x" * limit]
    size = 2 * (limit // 2 + 1)
    assert close == {
        "type": "websocket.close",
        "code": 1009,
        "reason": f"message of {size} bytes exceeds the limit of {limit}",
    }


def test_binary_message_over_max_message_size_closes_with_1009(app):
    with override_settings(WSGROUPS=wsgroups_settings(MAX_MESSAGE_SIZE=10)):

        async def scenario():
            client = FakeClient(app, ws_scope("/ws/echo"))
            await client.connect()
            client.frame(data=b"0123456789")
            client.frame(data=b"0123456789a")
            close = await client.wait_for_close()
            client.disconnect(1009)
            await client.finished()
            return client.sent, close

        sent, close = run(scenario)
    assert [m["bytes"] for m in sent if "bytes" in m] == [b"0123456789"]
    assert close["code"] == 1009 and close["reason"] == "message of 11 bytes exceeds the limit of 10"


@pytest.fixture
def recorded_group() -> Iterator[tuple[str, list[str]]]:
    """A group of this test's own whose text handler records each message it gets."""
    name, calls = "test-application-recorded", []

    @handle.websocket(name)
    async def record(message: str, ws: WebSocket) -> None:
        calls.append(message)

    try:
        yield name, calls
    finally:
        handle.groups.pop(name, None)


def test_message_rate_exceeded_closes_with_1008_and_the_frame_reaches_no_handler(app, recorded_group):
    group, calls = recorded_group
    with override_settings(WSGROUPS=wsgroups_settings(MESSAGE_RATE=1.0, MESSAGE_BURST=3)):

        async def scenario():
            client = FakeClient(app, ws_scope(f"/ws/{group}"))
            await client.connect()
            for i in range(5):
                client.frame(f"m{i}")
            close = await client.wait_for_close()
            client.disconnect(1008)
            await client.finished()
            return close, runtime().stats

        close, stats = run(scenario)
    assert calls == ["m0", "m1", "m2"]
    assert close == {"type": "websocket.close", "code": 1008, "reason": "rate limit: more than 1 messages per second"}
    assert stats["rate_limited"] == 1


def test_handler_exception_closes_with_1011_and_the_disconnect_handler_runs_once(app, events):
    async def scenario():
        client = FakeClient(app, ws_scope("/ws/echo"))
        greeting = await client.connect()
        client.frame("boom")
        close = await client.wait_for_close()
        client.frame("ignored after the close")
        client.disconnect(1011)
        await client.finished()
        return client.sent, close, greeting

    sent, close, greeting = run(scenario)
    assert close == {"type": "websocket.close", "code": 1011, "reason": "server error in handler"}
    assert texts(sent)[1:] == []
    assert [row["id"] for row in events("disconnect")] == [greeting["id"]]
    row = Connection.objects.get(pk=greeting["id"])
    assert (row.state, row.close_code) == (Connection.State.CLOSED, 1011)


def test_handler_exception_is_logged(app):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("wsgroups")
    logger.addHandler(handler)
    try:

        async def scenario():
            client = FakeClient(app, ws_scope("/ws/echo"))
            await client.connect()
            client.frame("boom")
            await client.wait_for_close()
            client.disconnect(1011)
            await client.finished()

        run(scenario)
    finally:
        logger.removeHandler(handler)
    failures = [r for r in records if r.levelno == logging.ERROR and "failed on WebSocket" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and "handler failure requested" in str(failures[0].exc_info[1])


def test_max_connections_reached_refuses_with_503(app):
    with override_settings(WSGROUPS=wsgroups_settings(MAX_CONNECTIONS=1)):

        async def scenario():
            first = FakeClient(app, ws_scope("/ws/echo"))
            await first.connect()
            second = FakeClient(app, ws_scope("/ws/echo", client=("10.0.0.2", 1))).start()
            await second.finished()
            first.disconnect()
            await first.finished()
            third = FakeClient(app, ws_scope("/ws/echo", client=("10.0.0.3", 1)))
            await third.connect()  # the first one's place is free again
            third.disconnect()
            await third.finished()
            return second.sent, runtime()

        sent, rt = run(scenario)
    assert types(sent) == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 503
    assert header(sent[0]["headers"], b"Retry-After") == [b"5"]
    assert b"server is at its limit of 1 connections" in sent[1]["body"]
    assert rt.stats["refused_at_limit"] == 1
    assert rt.connections.total == 0 and rt.connections.by_client == {}


def test_max_connections_per_client_refuses_with_503_only_that_client(app):
    with override_settings(WSGROUPS=wsgroups_settings(MAX_CONNECTIONS_PER_CLIENT=1)):

        async def scenario():
            first = FakeClient(app, ws_scope("/ws/echo"))
            await first.connect()
            same = FakeClient(app, ws_scope("/ws/echo")).start()
            await same.finished()
            other = FakeClient(app, ws_scope("/ws/echo", client=("10.0.0.9", 1)))
            await other.connect()
            for client in (first, other):
                client.disconnect()
                await client.finished()
            return same.sent

        sent = run(scenario)
    assert sent[0]["status"] == 503
    assert b"client address is at its limit of 1 connections" in sent[1]["body"]


def test_view_slower_than_handshake_timeout_gets_503_and_its_late_upgrade_fails(app, events):
    with override_settings(WSGROUPS=wsgroups_settings(HANDSHAKE_TIMEOUT=0.05)):

        async def scenario():
            client = FakeClient(app, ws_scope("/slow-upgrade", b"seconds=0.15")).start()
            await client.finished()
            await until(lambda: bool(events("late_upgrade_refused")))
            return client.sent, runtime()

        sent, rt = run(scenario)
    assert types(sent) == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 503
    assert sent[1]["body"] == b"The upgrade took too long."
    assert rt.stats["handshake_timeouts"] == 1
    assert "0.05s (HANDSHAKE_TIMEOUT)" in events("late_upgrade_refused")[0]["error"]
    assert len(rt.table) == 0 and rt.connections.total == 0


def test_view_returning_handled_without_upgrading_gets_500(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/handled-without-upgrade")).start()
        await client.finished()
        return client.sent

    sent = run(scenario)
    assert sent[0]["status"] == 500
    assert sent[1]["body"] == b"The view returned HANDLED without upgrading."


def test_a_message_other_than_connect_first_ends_the_application(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/ws/echo"))
        client.incoming.put_nowait({"type": "websocket.disconnect", "code": 1006})
        client.task = asyncio.ensure_future(app(client.scope, client.incoming.get, client.send))
        await client.finished()
        return client.sent, runtime()

    sent, rt = run(scenario)
    assert sent == []
    assert not rt.started


def test_second_send_upgrade_raises_upgrade_error_in_the_view(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/twice")).start()
        replies = await client.wait_for_texts(1)
        client.disconnect()
        await client.finished()
        return client.sent, replies

    sent, replies = run(scenario)
    assert types(sent)[0] == "websocket.accept"
    assert len(replies) == 1 and replies[0].startswith("error: send_upgrade() was already called for WebSocket ")


def test_reserved_header_in_send_upgrade_sends_no_accept_and_answers_500(app):
    async def scenario():
        client = FakeClient(app, ws_scope("/bad-header", b"name=Sec-WebSocket-Accept")).start()
        await client.finished()
        return client.sent, runtime()

    sent, rt = run(scenario)
    assert types(sent) == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 500
    assert len(rt.table) == 0


def test_cancelled_application_closes_with_1001_and_runs_the_disconnect_handler_once(app, events):
    async def scenario():
        client = FakeClient(app, ws_scope("/ws/echo"))
        greeting = await client.connect()
        assert client.task is not None
        client.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await client.task
        await runtime().flush_registry()
        return greeting, runtime()

    greeting, rt = run(scenario)
    assert [row["id"] for row in events("disconnect")] == [greeting["id"]]
    assert len(rt.table) == 0 and rt.connections.total == 0
    row = Connection.objects.get(pk=greeting["id"])
    assert (row.state, row.close_code) == (Connection.State.CLOSED, 1001)
