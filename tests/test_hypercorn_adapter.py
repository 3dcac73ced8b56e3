"""wsgroups.servers.hypercorn: hypercorn's real WebSocket stream, driven in process, and
PERMESSAGE_DEFLATE deciding whether hypercorn's handshake takes the offer.

The stream gets the events hypercorn's HTTP/1.1 protocol would hand it (the request head,
then the client's bytes, then the end of the stream) and the application's messages; what
it puts to the application is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from typing import Any
from unittest.mock import AsyncMock

import pytest
from django.conf import settings
from django.test import override_settings
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.protocol.events import Data, Request, StreamClosed
from hypercorn.protocol.ws_stream import Handshake, WSStream

from wsgroups.servers import hypercorn as adapter

from .wsclient import OP_CLOSE, build_frame, close_payload


class StockStream(WSStream):  # type: ignore[misc]
    """hypercorn's stream as it ships, even once a test here has installed the adapter on
    hypercorn's own class: its original method, and a plain attribute for ``app_put``."""

    _send_wsproto_event = WSStream._send_wsproto_event
    app_put = None
    _wsgroups_adapted = False


class AdaptedStream(WSStream):  # type: ignore[misc]
    """hypercorn's stream with wsgroups' adapter."""


adapter._adapt(AdaptedStream)


async def run_stream(
    cls: type[WSStream], client_bytes: bytes, app_messages: list[dict[str, Any]], max_message_size: int | None = None
) -> list[Any]:
    """Open a WebSocket on a stream of ``cls``, send the application's messages, then the
    client's bytes and the end of the stream: what the application was given."""
    put_to_app: list[Any] = []
    config = Config()
    if max_message_size is not None:
        config.websocket_max_message_size = max_message_size

    async def put(message: dict[str, Any]) -> None:
        put_to_app.append(message)

    task_group = AsyncMock()
    task_group.spawn_app.return_value = put
    stream = cls(AsyncMock(), config, WorkerContext(None), task_group, False, None, None, AsyncMock(), 1)
    key = base64.b64encode(os.urandom(16))
    headers = [
        (b"host", b"localhost"),
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
        (b"sec-websocket-key", key),
        (b"sec-websocket-version", b"13"),
    ]
    await stream.handle(
        Request(stream_id=1, http_version="1.1", headers=headers, raw_path=b"/ws", method="GET", state={})
    )
    await stream.app_send({"type": "websocket.accept"})
    for message in app_messages:
        await stream.app_send(message)
    if client_bytes:
        await stream.handle(Data(stream_id=1, data=client_bytes))
    await stream.handle(StreamClosed(stream_id=1))
    return put_to_app


def disconnect_of(put_to_app: list[Any]) -> dict[str, Any]:
    (message,) = [m for m in put_to_app if m["type"] == "websocket.disconnect"]
    return dict(message)


def test_stock_hypercorn_reports_a_clients_close_as_1006() -> None:
    close = build_frame(OP_CLOSE, close_payload(4000, b"the client says bye"))
    got = asyncio.run(run_stream(StockStream, close, []))
    assert disconnect_of(got) == {"type": "websocket.disconnect", "code": 1006}


def test_a_clients_close_code_and_reason_reach_the_application() -> None:
    close = build_frame(OP_CLOSE, close_payload(4000, b"the client says bye"))
    got = asyncio.run(run_stream(AdaptedStream, close, []))
    assert disconnect_of(got) == {"type": "websocket.disconnect", "code": 4000, "reason": "the client says bye"}


def test_a_close_frame_without_a_code_is_1005() -> None:
    got = asyncio.run(run_stream(AdaptedStream, build_frame(OP_CLOSE), []))
    assert disconnect_of(got) == {"type": "websocket.disconnect", "code": 1005, "reason": ""}


def test_a_dropped_connection_stays_1006() -> None:
    got = asyncio.run(run_stream(AdaptedStream, b"", []))
    assert disconnect_of(got) == {"type": "websocket.disconnect", "code": 1006}


def test_a_close_the_application_asked_for_is_reported_unchanged() -> None:
    close = build_frame(OP_CLOSE, close_payload(4001, b"answer"))
    got = asyncio.run(run_stream(AdaptedStream, close, [{"type": "websocket.close", "code": 4001, "reason": "bye"}]))
    assert disconnect_of(got) == {"type": "websocket.disconnect", "code": 1000}


def test_hypercorns_own_close_for_an_oversized_message_is_reported_with_its_code() -> None:
    frame = build_frame(0x2, b"x" * 64)
    got = asyncio.run(run_stream(AdaptedStream, frame, [], max_message_size=16))
    assert disconnect_of(got)["code"] == 1009


def test_install_adapts_hypercorns_stream_once() -> None:
    adapter.install()
    adapted = WSStream._send_wsproto_event
    adapter.install()
    assert WSStream._send_wsproto_event is adapted
    assert getattr(WSStream, "_wsgroups_adapted", False) is True


@pytest.mark.parametrize("cls", [StockStream, AdaptedStream])
def test_frames_still_reach_the_application(cls: type[WSStream]) -> None:
    text = build_frame(0x1, b"hello")
    got = asyncio.run(run_stream(cls, text, []))
    assert {"type": "websocket.receive", "bytes": None, "text": "hello"} in got


REQUEST = [
    (b"host", b"127.0.0.1"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
]


INSTALLED_NAMES = {
    Handshake: ("accept", "_wsgroups_adapted"),
    WSStream: ("_send_wsproto_event", "app_put", "_wsgroups_adapted"),
}


@pytest.fixture
def installed() -> Iterator[None]:
    saved = {
        (cls, name): cls.__dict__[name]
        for cls, names in INSTALLED_NAMES.items()
        for name in names
        if name in cls.__dict__
    }
    try:
        adapter.install()
        yield
    finally:
        for cls, names in INSTALLED_NAMES.items():
            for name in names:
                if (cls, name) in saved:
                    setattr(cls, name, saved[cls, name])
                elif name in cls.__dict__:
                    delattr(cls, name)


def extensions_answered(deflate: bool, stock: bool = False) -> list[bytes]:
    handshake = Handshake(REQUEST, "1.1")
    accept = getattr(Handshake.accept, "__wrapped__", Handshake.accept) if stock else Handshake.accept
    with override_settings(WSGROUPS={**settings.WSGROUPS, "PERMESSAGE_DEFLATE": deflate}):
        status, headers, _ = accept(handshake, None, [])
    assert status == 101
    return [value for name, value in headers if name == b"sec-websocket-extensions"]


def test_stock_hypercorn_always_takes_the_offer():
    assert len(extensions_answered(False, stock=True)) == 1  # the reason for the adapter


def test_setting_off_ignores_the_offer(installed):
    assert extensions_answered(False) == []


def test_setting_on_keeps_hypercorns_negotiation(installed):
    (answer,) = extensions_answered(True)
    assert answer.startswith(b"permessage-deflate")


def test_install_is_idempotent(installed):
    accept = Handshake.accept
    adapter.install()
    assert Handshake.accept is accept
