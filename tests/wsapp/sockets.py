"""Handlers of the test groups; each records its calls for the test process."""

from __future__ import annotations

import asyncio
import json
import os
import time

from wsgroups import ConnectionFlags, Room, WebSocket, handle

from .events import record


@handle.websocket("echo")
def echo_text(message: str, ws: WebSocket) -> None:
    if message == "boom":
        raise RuntimeError("handler failure requested by the test")
    if message.startswith("sleep:"):
        time.sleep(float(message.split(":", 1)[1]))
    if message.startswith("close:"):
        _, code, reason = message.split(":", 2)
        ws.disconnect(reason, int(code))
        return
    if message == "send-then-close":
        ws.send("last words", flags=ConnectionFlags.DISCONNECT_AFTER_SEND)
        return
    if message == "close-now":
        ws.send("never seen", flags=ConnectionFlags.DISCONNECT_IMMEDIATELY)
        return
    if message == "current":
        ws.send(json.dumps({"current": int(WebSocket.current) if WebSocket.current else None, "id": ws.id}))
        return
    if message == "session":
        session = ws.session
        ws.send(json.dumps({"name": session.get("name") if session is not None else None}))
        return
    if message == "flood":
        for i in range(5000):
            ws.send(f"flood {i}")
        return
    ws.send(message)


@handle.websocket("echo")
async def echo_binary(data: bytes, ws: WebSocket) -> None:
    await ws.asend(data)


@handle.websocket_disconnect("echo")
def echo_gone(ws: WebSocket) -> None:
    record("disconnect", id=ws.id, group="echo")


@handle.websocket("binary-only", kind="binary")
async def binary_only(data: bytes, ws: WebSocket) -> None:
    await ws.asend(data)


@handle.websocket_disconnect("binary-only")
def binary_only_gone(ws: WebSocket) -> None:
    record("disconnect", id=ws.id, group="binary-only")


@handle.websocket("slow")
async def slow(message: str, ws: WebSocket) -> None:
    await asyncio.sleep(0.01)
    await ws.asend(message)


@handle.websocket_disconnect("slow")
async def slow_gone(ws: WebSocket) -> None:
    record("disconnect", id=ws.id, group="slow")


@handle.websocket("room")
async def room_echo(message: str, ws: WebSocket) -> None:
    await ws.asend(message)


@handle.websocket_disconnect("room")
def room_gone(ws: WebSocket) -> None:
    record("disconnect", id=ws.id, group="room")


@handle.websocket("where")
def where(message: str, ws: WebSocket) -> None:
    """Reply with the message and the pid of the process that ran the handler."""
    time.sleep(0.002)
    if not ws.send(json.dumps({"message": message, "pid": os.getpid()})):
        record("send_refused", id=ws.id, message=message)


@handle.websocket_disconnect("where")
def where_gone(ws: WebSocket) -> None:
    record("disconnect", id=ws.id, group="where")


@handle.websocket("conformance")
async def conformance_text(message: str, ws: WebSocket) -> None:
    """The Autobahn cases' echo: every text message back unchanged."""
    await ws.asend(message)


@handle.websocket("conformance")
async def conformance_binary(data: bytes, ws: WebSocket) -> None:
    await ws.asend(data)


@handle.websocket("rooms")
def rooms_command(message: str, ws: WebSocket) -> None:
    """``join:<room>[:<meta JSON>]``, ``leave:<room>``, ``rooms``, ``say:<room>:<text>`` (to the
    others), ``presence:<room>``: each answers with a JSON object."""
    try:
        _room_command(message, ws)
    except ValueError as exc:
        ws.send(json.dumps({"error": f"ValueError: {exc}"}))


def _room_command(message: str, ws: WebSocket) -> None:
    command, _, rest = message.partition(":")
    if command == "join":
        room, _, meta = rest.partition(":")
        ws.send(json.dumps({"joined": ws.join(room, meta=json.loads(meta) if meta else None)}))
    elif command == "leave":
        ws.send(json.dumps({"left": ws.leave(rest)}))
    elif command == "rooms":
        ws.send(json.dumps({"rooms": sorted(ws.rooms())}))
    elif command == "say":
        room, _, text = rest.partition(":")
        ws.send(json.dumps({"said": Room(room).broadcast(text, exclude=[ws])}))
    elif command == "presence":
        ws.send(json.dumps({"presence": {str(k): v for k, v in Room(rest).presence().items()}}))
    else:
        ws.send(json.dumps({"error": f"unknown command {command!r}"}))


@handle.websocket_disconnect("rooms")
def rooms_gone(ws: WebSocket) -> None:
    record("disconnect", id=ws.id, group="rooms", rooms=sorted(ws.rooms()))
