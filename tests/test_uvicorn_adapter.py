"""``wsgroups.servers.uvicorn``: its pure parts, ``install()`` on uvicorn's own protocol classes,
and those classes driven in-process with a fake transport (no server, no socket)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
import websockets
from django.conf import settings
from django.test import override_settings
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from wsgroups.handshake import head_refusal
from wsgroups.servers import uvicorn as adapter


def uvicorn_version() -> tuple[int, ...]:
    return tuple(int(part) for part in uvicorn.__version__.split(".")[:2])


HTTP_CLASSES = (H11Protocol, HttpToolsProtocol)
ADAPTED_CLASSES = (*HTTP_CLASSES, WebSocketsSansIOProtocol)
PATCHED_NAMES = ("connection_made", "data_received", "connection_lost", "handle_connect", "send", "_wsgroups_adapted")
HANDSHAKE_TIMEOUT = 0.05
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def patched_attributes() -> dict[type, dict[str, Any]]:
    """What ``install()`` may set on each of uvicorn's classes, as the classes hold it now."""
    return {
        cls: {name: cls.__dict__[name] for name in PATCHED_NAMES if name in cls.__dict__} for cls in ADAPTED_CLASSES
    }


@pytest.fixture
def installed() -> Iterator[None]:
    """``install()`` for one test; uvicorn's classes get their own methods back afterwards."""
    saved = patched_attributes()
    try:
        with override_settings(WSGROUPS={**settings.WSGROUPS, "HANDSHAKE_TIMEOUT": HANDSHAKE_TIMEOUT}):
            adapter.install()
            yield
    finally:
        for cls, attributes in saved.items():
            for name in PATCHED_NAMES:
                if name in attributes:
                    setattr(cls, name, attributes[name])
                elif name in cls.__dict__:
                    delattr(cls, name)


class FakeTransport:
    """What uvicorn's protocols use of an asyncio transport."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.protocol: Any = None
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, f"write after close: {data!r}"
        self.buffer += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await receive()
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def connect(cls: type, app: Callable[..., Any] = http_app, **config: Any) -> tuple[Any, FakeTransport]:
    """A ``cls`` protocol on the running loop, connected to a fake transport."""
    options: dict[str, Any] = {"http": "h11", "ws": "websockets-sansio", "lifespan": "off", "log_config": None}
    server_config = Config(app=app, **{**options, **config})
    protocol = cls(config=server_config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = FakeTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol, transport


async def settle(protocol: Any) -> None:
    """Let the protocol's application tasks run to completion (or cancel them)."""
    tasks = set(protocol.tasks)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=1)
        for task in pending:
            task.cancel()
    await asyncio.sleep(0)


async def until(predicate: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 2
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def upgrade_request(version: bytes = b"13", extra: bytes = b"", path: bytes = b"/ws") -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n"
    )


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    handler = Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


# --- pure parts ---------------------------------------------------------------------------


def _protocol(transport: Any, cycle: Any = None) -> SimpleNamespace:
    protocol = SimpleNamespace(transport=transport, cycle=cycle)
    if transport is not None and transport.protocol is None:
        transport.protocol = protocol
    return protocol


def test_head_is_pending_on_a_fresh_connection_and_between_requests():
    assert adapter._head_pending(_protocol(FakeTransport())) is True
    assert adapter._head_pending(_protocol(FakeTransport(), SimpleNamespace(response_complete=True))) is True


def test_head_is_not_pending_while_a_request_runs():
    assert adapter._head_pending(_protocol(FakeTransport(), SimpleNamespace(response_complete=False))) is False


def test_head_is_not_pending_without_an_open_transport_or_after_an_upgrade():
    assert adapter._head_pending(_protocol(None)) is False
    closing = FakeTransport()
    closing.close()
    assert adapter._head_pending(_protocol(closing)) is False
    upgraded = FakeTransport()
    upgraded.protocol = object()  # the transport now feeds the WebSocket protocol
    assert adapter._head_pending(_protocol(upgraded)) is False


@pytest.mark.parametrize("status", [408, 431])
def test_refuse_writes_the_head_refusal_and_closes(status):
    transport = FakeTransport()
    adapter._refuse(SimpleNamespace(transport=transport, client=("127.0.0.1", 1)), status)
    assert transport.buffer == head_refusal(status)
    assert transport.buffer.startswith(b"HTTP/1.1 %d " % status)
    assert transport.closed


def test_head_deadline_refuses_only_a_pending_head():
    pending = _protocol(FakeTransport())
    pending._wsgroups_deadline = object()
    adapter._head_deadline(pending)
    assert pending._wsgroups_deadline is None
    assert pending.transport.buffer.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and pending.transport.closed

    busy = _protocol(FakeTransport(), SimpleNamespace(response_complete=False))
    adapter._head_deadline(busy)
    assert busy.transport.buffer == b"" and not busy.transport.closed


def test_max_request_head_is_32_kib():
    assert adapter.MAX_REQUEST_HEAD == 32 * 1024


# --- install() ----------------------------------------------------------------------------


def test_install_adapts_uvicorns_protocol_classes(installed):
    for cls in ADAPTED_CLASSES:
        assert cls.__dict__.get("_wsgroups_adapted") is True, cls
        assert cls.data_received.__qualname__.startswith("_adapt"), cls
    assert H11Protocol.connection_lost.__name__ == "connection_lost_disarmed"
    assert WebSocketsSansIOProtocol.handle_connect.__name__ == "handle_connect_checking_version"
    assert WebSocketsSansIOProtocol.send.__name__ == "send_marking_refusals"


def test_install_is_idempotent(installed):
    before = patched_attributes()
    adapter.install()
    adapter.install()
    assert patched_attributes() == before


def test_install_twice_counts_request_head_bytes_once(installed):
    adapter.install()

    async def scenario():
        protocol, transport = connect(HttpToolsProtocol)
        protocol.data_received(b"GET / HTTP/1.1\r\n")
        for _ in range(20):  # 20 KiB: over the bound if every byte were counted twice
            protocol.data_received(b"X-Filler: " + b"a" * 1012 + b"\r\n")
        counted = protocol._wsgroups_head_bytes
        protocol.connection_lost(None)
        return counted, transport

    counted, transport = asyncio.run(scenario())
    assert counted == len(b"GET / HTTP/1.1\r\n") + 20 * 1024
    assert transport.buffer == b""


# --- the HTTP protocols under the adapter -------------------------------------------------


@pytest.mark.parametrize("cls", HTTP_CLASSES)
def test_slow_request_head_gets_408(installed, cls):
    async def scenario():
        protocol, transport = connect(cls)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await asyncio.sleep(HANDSHAKE_TIMEOUT * 3)
        return protocol, transport

    protocol, transport = asyncio.run(scenario())
    assert transport.buffer == head_refusal(408)
    assert transport.closed
    assert protocol._wsgroups_deadline is None


@pytest.mark.parametrize("cls", HTTP_CLASSES)
def test_complete_request_head_disarms_the_deadline(installed, cls):
    async def scenario():
        protocol, transport = connect(cls)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        deadline = protocol._wsgroups_deadline
        await until(lambda: transport.buffer.endswith(b"ok"))
        await asyncio.sleep(HANDSHAKE_TIMEOUT * 2)
        await settle(protocol)
        return deadline, transport

    deadline, transport = asyncio.run(scenario())
    assert deadline is None
    assert transport.buffer.startswith(b"HTTP/1.1 200 ")
    assert b"408" not in transport.buffer


@pytest.mark.parametrize("cls", HTTP_CLASSES)
def test_next_request_on_a_kept_alive_connection_gets_a_new_deadline(installed, cls):
    async def scenario():
        protocol, transport = connect(cls, timeout_keep_alive=5)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await until(lambda: transport.buffer.endswith(b"ok"))
        await settle(protocol)
        first = transport.buffer
        protocol.data_received(b"GET /second HTTP/1.1\r\n")
        rearmed = protocol._wsgroups_deadline is not None
        counted = protocol._wsgroups_head_bytes
        await asyncio.sleep(HANDSHAKE_TIMEOUT * 3)
        protocol.connection_lost(None)
        return first, transport.buffer[len(first) :], rearmed, counted

    first, rest, rearmed, counted = asyncio.run(scenario())
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rearmed
    assert counted == len(b"GET /second HTTP/1.1\r\n")
    assert rest == head_refusal(408)


@pytest.mark.parametrize("cls", HTTP_CLASSES)
def test_request_head_over_max_request_head_gets_431_and_never_reaches_the_parser(installed, cls):
    async def scenario():
        # h11 refuses incomplete events over 16 KiB by itself (400): raise its bound past ours.
        protocol, transport = connect(cls, h11_max_incomplete_event_size=4 * adapter.MAX_REQUEST_HEAD)
        line = b"GET / HTTP/1.1\r\n"
        protocol.data_received(line)
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        sent = len(line)
        while sent + len(filler) <= adapter.MAX_REQUEST_HEAD:
            protocol.data_received(filler)
            sent += len(filler)
        at_limit = (transport.buffer, transport.closed)
        protocol.data_received(b"b" * (adapter.MAX_REQUEST_HEAD - sent))  # exactly at the limit
        exactly = (transport.buffer, transport.closed)
        protocol.data_received(b"c")
        protocol.connection_lost(None)
        return at_limit, exactly, transport

    at_limit, exactly, transport = asyncio.run(scenario())
    assert at_limit == (b"", False)
    assert exactly == (b"", False)
    assert transport.buffer == head_refusal(431)
    assert transport.closed


@pytest.mark.parametrize("cls", HTTP_CLASSES)
def test_connection_lost_cancels_the_deadline(installed, cls):
    async def scenario():
        protocol, transport = connect(cls)
        deadline = protocol._wsgroups_deadline
        protocol.connection_lost(None)
        await asyncio.sleep(HANDSHAKE_TIMEOUT * 2)
        return deadline, protocol, transport

    deadline, protocol, transport = asyncio.run(scenario())
    assert deadline is not None and deadline.cancelled()
    assert protocol._wsgroups_deadline is None
    assert transport.buffer == b""


def test_deadline_is_armed_for_handshake_timeout_seconds(installed):
    async def scenario():
        loop = asyncio.get_running_loop()
        start = loop.time()
        protocol, _ = connect(H11Protocol)
        when = protocol._wsgroups_deadline.when() - start
        protocol.connection_lost(None)
        return when

    when = asyncio.run(scenario())
    assert HANDSHAKE_TIMEOUT <= when < HANDSHAKE_TIMEOUT + 0.05


@pytest.mark.parametrize("cls", HTTP_CLASSES)
def test_upgraded_connection_is_not_refused_when_the_deadline_passes(installed, cls):
    async def scenario():
        protocol, transport = connect(cls)
        protocol.data_received(upgrade_request())
        await until(lambda: b"101" in transport.buffer)
        await asyncio.sleep(HANDSHAKE_TIMEOUT * 3)
        ws = transport.protocol
        ws.connection_lost(None)
        await settle(ws)
        return protocol, ws, transport

    protocol, ws, transport = asyncio.run(scenario())
    assert isinstance(ws, WebSocketsSansIOProtocol) and ws is not protocol
    assert transport.buffer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"408" not in transport.buffer
    assert protocol._wsgroups_deadline is None


# --- the WebSocket protocol under the adapter ---------------------------------------------


def test_websocket_message_size_is_capped_at_max_message_size(installed):
    async def scenario():
        default, _ = connect(WebSocketsSansIOProtocol)
        smaller, _ = connect(WebSocketsSansIOProtocol, ws_max_size=1000)
        return default.conn.max_message_size, smaller.conn.max_message_size

    default, smaller = asyncio.run(scenario())
    assert default == settings.WSGROUPS["MAX_MESSAGE_SIZE"]
    assert smaller == 1000


@pytest.mark.parametrize("version", [b"12", b"8", b"14", b"13x"])
def test_websocket_version_other_than_13_gets_426(installed, version):
    async def scenario():
        protocol, transport = connect(WebSocketsSansIOProtocol)
        protocol.data_received(upgrade_request(version))
        return protocol, transport

    protocol, transport = asyncio.run(scenario())
    head, _, body = transport.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13" in head
    assert body == b"WebSocket version " + version + b" is not supported; use 13.\n"
    assert transport.closed
    assert protocol.tasks == set()  # the application was never called


def test_websocket_version_13_is_handed_to_the_application(installed):
    async def scenario():
        protocol, transport = connect(WebSocketsSansIOProtocol)
        protocol.data_received(upgrade_request(b" 13"))
        await until(lambda: bool(transport.buffer))
        protocol.connection_lost(None)
        await settle(protocol)
        return transport

    transport = asyncio.run(scenario())
    assert transport.buffer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


WEBSOCKETS_MAJOR = int(websockets.__version__.split(".")[0])


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (upgrade_request(extra=b"".join(b"X-H%d: v\r\n" % i for i in range(200))), b"431"),
        (upgrade_request(extra=b"X-Long: " + b"a" * 9000 + b"\r\n"), b"431"),
        (upgrade_request(path=b"/" + b"p" * 9000), b"414"),
    ],
    ids=["too-many-headers", "header-line-too-long", "request-line-too-long"],
)
def test_websocket_request_head_websockets_cannot_parse_is_answered(installed, request_head, status):
    async def scenario():
        protocol, transport = connect(WebSocketsSansIOProtocol)
        protocol.data_received(request_head)
        return protocol, transport

    protocol, transport = asyncio.run(scenario())
    if WEBSOCKETS_MAJOR < 17:
        status = b"400"  # older websockets prepare no answer: the adapter sends its own
    assert transport.buffer.startswith(b"HTTP/1.1 " + status + b" ")
    assert transport.closed
    assert protocol.tasks == set()


def test_refused_upgrade_completes_the_handshake_without_an_error_log(installed, uvicorn_errors):
    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    async def scenario():
        protocol, transport = connect(WebSocketsSansIOProtocol, app=refuse)
        protocol.data_received(upgrade_request())
        await until(lambda: transport.closed)
        await settle(protocol)
        return protocol, transport

    protocol, transport = asyncio.run(scenario())
    assert transport.buffer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert transport.buffer.endswith(b"\r\n\r\nno")
    assert protocol.handshake_complete
    assert [r.getMessage() for r in uvicorn_errors if r.levelno >= logging.ERROR] == []


def test_refusal_sent_in_parts_completes_the_handshake_only_at_the_last_part(installed):
    async def scenario():
        seen: list[bool] = []

        async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"a", "more_body": True})
            seen.append(protocol.handshake_complete)
            await send({"type": "websocket.http.response.body", "body": b"b"})
            seen.append(protocol.handshake_complete)

        protocol, transport = connect(WebSocketsSansIOProtocol, app=refuse)
        protocol.data_received(upgrade_request())
        await until(lambda: transport.closed)
        await settle(protocol)
        return seen, transport

    seen, transport = asyncio.run(scenario())
    # uvicorn before 0.55 marks the handshake complete only through the adapter, at the last
    # part; 0.55 and later mark it at the response's start. Either way it is complete once
    # the whole body is out, and the body is whole.
    assert seen[1] is True
    if uvicorn_version() < (0, 55):
        assert seen[0] is False
    assert transport.buffer.endswith(b"\r\n\r\nab")


@pytest.mark.parametrize("cls", HTTP_CLASSES)
def test_request_body_read_together_with_the_head_is_not_counted_as_head(installed, cls):
    """A POST whose head and body arrive in one read (asyncio reads up to 256 KiB at once)
    has a small head: the body must not count towards MAX_REQUEST_HEAD."""
    body = b"a" * (adapter.MAX_REQUEST_HEAD + 1)
    head = b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def scenario():
        protocol, transport = connect(cls)
        protocol.data_received(head + body)
        await until(lambda: transport.closed or transport.buffer.endswith(b"ok"))
        await settle(protocol)
        return transport

    transport = asyncio.run(scenario())
    assert transport.buffer.startswith(b"HTTP/1.1 200 "), transport.buffer[:40]
