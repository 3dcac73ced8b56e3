"""Test a project's sockets in the test process, as Django's test client tests its views.

``connect(path)`` runs a WebSocket upgrade through the project's ASGI application
(``ASGI_APPLICATION``: its URLconf, middleware, views, consumers and handlers) on the
test's event loop, with no server and no network, and gives a :class:`TestWebSocket` to
talk to it. The socket lives in this process's wsgroups runtime, so ``WebSocket(ws.id)``,
``Group``, ``Room`` (joins, broadcasts, presence, users' rooms) and the registry work on it
as on a served socket.

The runtime joins the cluster when the first socket opens and leaves it when the last one
has closed (each async test method runs on a loop of its own). Its threads write the
registry, so tests use Django's ``TransactionTestCase`` (or pytest-django's
``transactional_db``), whose data other threads and connections see.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from http import cookies as http_cookies
from typing import Any
from urllib.parse import quote, unquote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http import HttpResponse
from django.test import AsyncClient
from django.utils.module_loading import import_string

from ..application import RESPONSE_EXTENSION, SOCKET_ID_EXTENSION, ASGIApp
from ..conf import conf
from ..runtime import current_runtime, forget_runtime, get_runtime

__all__ = ["Refused", "TestWebSocket", "connect"]

logger = logging.getLogger("wsgroups")

#: Seconds past HANDSHAKE_TIMEOUT to wait for the application to answer an upgrade.
DECISION_GRACE = 5.0
#: Seconds the application gets to finish (disconnect handler included) after a close.
CLOSE_WAIT = 10.0
#: The same for a plain Channels consumer's socket (no disconnect handler of wsgroups to wait for).
PLAIN_CONSUMER_WAIT = 2.0

_applications: dict[str, ASGIApp] = {}
_open_sockets = 0


class Refused(Exception):
    """The upgrade was refused; ``response`` is what the client got (status, headers, body)."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(f"WebSocket upgrade refused with {response.status_code}: {response.content[:200]!r}")
        self.response = response


class TestWebSocket:
    """The client side of a socket opened by :func:`connect`."""

    __test__ = False  # not a test class, for pytest

    def __init__(self, path: str) -> None:
        self.path = path
        #: The 101 (its headers and cookies), or the refusal.
        self.response: HttpResponse = HttpResponse(status=101)
        #: The socket's wsgroups ID (None for a socket a plain Channels consumer accepted).
        self.id: int | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<TestWebSocket {self.path} id={self.id} close_code={self.close_code}>"

    async def receive(self, timeout: float = 1.0) -> str | bytes:
        """The next message the server sent (str for a text frame, bytes for binary).

        Raises :class:`AssertionError` when none comes within ``timeout`` seconds, or
        when the server closed the socket instead.
        """
        if self.close_code is not None and self._from_app.empty():
            raise AssertionError(f"the WebSocket is closed ({self.close_code} {self.close_reason!r})")
        try:
            message = await asyncio.wait_for(self._next_message(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise AssertionError(f"no message from the server within {timeout:g}s") from None
        if message["type"] == "websocket.close":
            raise AssertionError(f"the server closed the WebSocket with {self.close_code} {self.close_reason!r}")
        text = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def send(self, data: str | bytes) -> None:
        """Send a text frame (str) or a binary frame (bytes) to the server."""
        if isinstance(data, str):
            message: dict[str, Any] = {"type": "websocket.receive", "text": data}
        elif isinstance(data, (bytes, bytearray, memoryview)):
            message = {"type": "websocket.receive", "bytes": bytes(data)}
        else:
            raise TypeError(f"data must be str or bytes, got {type(data).__name__}")
        if self.close_code is not None:
            raise AssertionError(f"the WebSocket is closed ({self.close_code} {self.close_reason!r})")
        await self._to_app.put(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client side with ``code`` and wait until the server is done with
        the socket (its disconnect handler has run)."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            await self._to_app.put({"type": "websocket.disconnect", "code": code, "reason": reason})
        await self._finish()

    async def _next_message(self) -> dict[str, Any]:
        while True:
            message = await self._from_app.get()
            kind = message.get("type")
            if kind == "websocket.send":
                return message
            if kind == "websocket.close":
                self._closed_by_server(message)
                return message

    def _closed_by_server(self, message: Mapping[str, Any]) -> None:
        if self.close_code is None:
            self.close_code = int(message.get("code") or 1000)
            self.close_reason = str(message.get("reason") or "")
            # What a server does once the close handshake is over: tell the application.
            self._to_app.put_nowait(
                {"type": "websocket.disconnect", "code": self.close_code, "reason": self.close_reason}
            )

    async def _finish(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        wait = CLOSE_WAIT if self.id is not None else PLAIN_CONSUMER_WAIT
        try:
            await asyncio.wait_for(asyncio.shield(task), wait)
        except (asyncio.TimeoutError, TimeoutError):
            task.cancel()
            if self.id is None:
                # A plain consumer: its disconnect() ran, but channels_redis's receive on
                # redis-py 8 sometimes ignores the cancel and goes on until its read times out
                # (a server does not wait for that either).
                logger.warning("%r: the consumer did not finish within %gs of the close; cancelled", self, wait)
                return
            raise AssertionError(f"the application did not finish within {wait:g}s of the close") from None


async def project_application() -> ASGIApp:
    """The project's ``ASGI_APPLICATION``, imported once per setting value (in a thread:
    building it reads the database)."""
    path = str(getattr(settings, "ASGI_APPLICATION", "") or "")
    if not path:
        raise ValueError("settings.ASGI_APPLICATION must name the project's application to connect() through it")
    if path not in _applications:
        _applications[path] = await sync_to_async(import_string)(path)
    return _applications[path]


def _scope(
    path: str,
    headers: Mapping[str, str] | None,
    cookies: Mapping[str, str],
    subprotocols: Iterable[str],
    id_holder: dict[str, int],
) -> dict[str, Any]:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    path_part, _, query = path.partition("?")
    pairs: list[tuple[bytes, bytes]] = []
    given = {name.lower(): value for name, value in (headers or {}).items()}
    given.setdefault("host", "testserver")
    for name, value in given.items():
        if any(ch in f"{name}{value}" for ch in "\r\n\0"):
            raise ValueError(f"header {name!r} contains CR, LF or NUL")
        pairs.append((name.encode("latin-1"), str(value).encode("latin-1")))
    if cookies:
        jar = http_cookies.SimpleCookie()
        for name, value in cookies.items():
            jar[name] = value
        pairs.append((b"cookie", "; ".join(m.OutputString() for m in jar.values()).encode("latin-1")))
    offered = list(subprotocols)
    if offered:
        pairs.append((b"sec-websocket-protocol", ", ".join(offered).encode("latin-1")))
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": unquote(path_part),
        "raw_path": quote(unquote(path_part)).encode("ascii"),
        "query_string": query.encode("latin-1"),
        "headers": pairs,
        "subprotocols": offered,
        "extensions": {RESPONSE_EXTENSION: {}, SOCKET_ID_EXTENSION: id_holder},
    }


def _in_transaction() -> bool:
    """Whether this thread's database connections are inside a transaction (TestCase's)."""
    return any(connections[alias].in_atomic_block for alias in connections)


async def _login_cookies(user: Any) -> dict[str, str]:
    client = AsyncClient()
    await client.aforce_login(user)
    return {name: morsel.value for name, morsel in client.cookies.items()}


def _accepted(message: Mapping[str, Any]) -> HttpResponse:
    response = HttpResponse(status=101)
    for raw_name, raw_value in message.get("headers") or ():
        name, value = bytes(raw_name).decode("latin-1"), bytes(raw_value).decode("latin-1")
        if name.lower() == "set-cookie":
            response.cookies.load(value)
        else:
            response.headers[name] = value
    if message.get("subprotocol"):
        response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]
    return response


async def _refusal(start: Mapping[str, Any], ws: TestWebSocket) -> HttpResponse:
    body = b""
    message: Mapping[str, Any] = {"more_body": True}
    while message.get("more_body", False):
        message = await asyncio.wait_for(ws._from_app.get(), CLOSE_WAIT)
        body += bytes(message.get("body") or b"")
    response = HttpResponse(body, status=int(start["status"]))
    response.headers.pop("Content-Type", None)
    for raw_name, raw_value in start.get("headers") or ():
        name, value = bytes(raw_name).decode("latin-1"), bytes(raw_value).decode("latin-1")
        if name.lower() == "set-cookie":
            response.cookies.load(value)
        elif name.lower() not in ("content-length", "connection"):
            response.headers[name] = value
    if start.get("reason"):
        response.reason_phrase = str(start["reason"])
    return response


async def _decision(ws: TestWebSocket) -> None:
    """Wait for the application's answer to the upgrade: accept, or raise :class:`Refused`."""
    assert ws._task is not None
    getter = asyncio.ensure_future(ws._from_app.get())
    try:
        done, _ = await asyncio.wait(
            {getter, ws._task}, timeout=conf.HANDSHAKE_TIMEOUT + DECISION_GRACE, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if not getter.done():
            getter.cancel()
    if getter not in done:
        if ws._task in done:
            ws._task.result()  # the application's exception, if it raised one
            raise AssertionError(f"the application returned without answering the upgrade to {ws.path}")
        raise AssertionError(f"the application did not answer the upgrade to {ws.path} in time")
    message = getter.result()
    kind = message.get("type")
    if kind == "websocket.accept":
        ws.response = _accepted(message)
        ws.subprotocol = message.get("subprotocol")
        return
    if kind == "websocket.http.response.start":
        raise Refused(await _refusal(message, ws))
    if kind == "websocket.close":  # refused without a response: servers answer 403
        raise Refused(HttpResponse(status=403))
    raise AssertionError(f"the application answered the upgrade with {message!r}")


async def _leave_when_idle() -> None:
    global _open_sockets
    _open_sockets -= 1
    runtime = current_runtime()
    if _open_sockets == 0 and runtime is not None:
        await runtime.leave()
        forget_runtime(runtime)
        runtime.executor.shutdown(wait=False)
        runtime.upgrade_executor.shutdown(wait=False)


def _runtime_on_this_loop() -> None:
    """Make the process's runtime one on the running loop (an earlier test's loop is gone)."""
    global _open_sockets
    runtime = current_runtime()
    if runtime is not None and runtime.loop is not asyncio.get_running_loop():
        forget_runtime(runtime)
        _open_sockets = 0  # those of an earlier test ended with its loop
    get_runtime().signals_installed = True  # the test runner keeps its own signal handling


@asynccontextmanager
async def connect(
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    subprotocols: Iterable[str] = (),
    user: Any = None,
) -> AsyncIterator[TestWebSocket]:
    """Open a WebSocket to ``path`` through the project's application, in this process.

    ``headers`` go on the upgrade request (``Origin``, for instance), ``cookies`` in its
    ``Cookie`` header; ``user`` is logged in for it, as ``Client.force_login`` does. A
    refused upgrade raises :class:`Refused`; on leaving the block the client closes the
    socket with 1000 (unless it is closed already) and waits for its disconnect handler.
    """
    global _open_sockets
    # Django's async test methods run their loop in another thread while the test's thread,
    # which holds TestCase's transaction, runs what sync_to_async hands it.
    if await sync_to_async(_in_transaction)():
        raise RuntimeError(
            "wsgroups.testing.connect() cannot run inside a transaction such as TestCase's: wsgroups writes "
            "the registry from its own threads, which would wait for it. Use TransactionTestCase "
            "(pytest-django: django_db(transaction=True))."
        )
    jar = dict(cookies or {})
    if user is not None:
        jar.update(await _login_cookies(user))
    id_holder: dict[str, int] = {}
    scope = _scope(path, headers, jar, subprotocols, id_holder)
    application = await project_application()
    _runtime_on_this_loop()
    ws = TestWebSocket(path)
    ws._task = asyncio.ensure_future(application(scope, ws._to_app.get, _sender(ws)))
    _open_sockets += 1
    try:
        await ws._to_app.put({"type": "websocket.connect"})
        try:
            await _decision(ws)
        except BaseException:
            await _finish_quietly(ws)
            raise
        ws.id = id_holder.get("id")
        yield ws
        await ws.close()
    finally:
        await _finish_quietly(ws)
        await _leave_when_idle()


def _sender(ws: TestWebSocket) -> Any:
    async def send(message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.close" and ws._task is not None:
            ws._closed_by_server(message)  # at once: the test may never read up to it
        await ws._from_app.put(dict(message))

    return send


async def _finish_quietly(ws: TestWebSocket) -> None:
    task = ws._task
    if task is None or task.done():
        return
    if ws.close_code is None:
        ws.close_code, ws.close_reason = 1006, ""
        await ws._to_app.put({"type": "websocket.disconnect", "code": 1006})
    try:
        await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT)
    except asyncio.CancelledError:
        if not task.done():
            task.cancel()
        if not task.cancelled():
            raise  # the test itself is being cancelled
    except Exception:  # the application's own error, or a timeout: the test's error comes first
        logger.debug("%r: the application ended with an error after the test's", ws, exc_info=True)
        task.cancel()
