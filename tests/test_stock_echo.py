"""bench.stock_echo, driven in-process as a server would: lifespan, HTTP 404, WebSocket echo."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.stock_echo import application


def drive(scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    queue = list(incoming)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(application(scope, receive, send), 5))
    return sent


def test_websocket_messages_come_back_as_they_came():
    sent = drive(
        {"type": "websocket"},
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "héllo"},
            {"type": "websocket.receive", "bytes": b"\x00\xff"},
            {"type": "websocket.receive", "text": ""},
            {"type": "websocket.disconnect", "code": 1000},
        ],
    )
    assert sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "héllo"},
        {"type": "websocket.send", "bytes": b"\x00\xff"},
        {"type": "websocket.send", "text": ""},
    ]


def test_http_gets_404_and_lifespan_completes():
    http = drive({"type": "http"}, [])
    assert http[0]["status"] == 404
    lifespan = drive({"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert [m["type"] for m in lifespan] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
