"""Handlers of group ``chat``: a message goes to everyone else in the sender's room."""

from __future__ import annotations

from wsgroups import WebSocket, handle

from .rooms import chat_room_of, event, max_message_length, online


@handle.websocket("chat")
def on_message(text: str, ws: WebSocket) -> None:
    room = chat_room_of(ws)
    if room is None:
        return
    text = text.strip()
    if not text:
        ws.send(event("error", reason="Empty messages are not sent."))
        return
    if len(text) > max_message_length():
        ws.send(event("error", reason=f"Messages are at most {max_message_length()} characters."))
        return
    nickname = (room.presence().get(ws.id) or {}).get("nickname")
    room.broadcast(event("message", id=ws.id, nickname=nickname, text=text), exclude=[ws])


@handle.websocket("chat")
def on_binary(data: bytes, ws: WebSocket) -> None:
    ws.send(event("error", reason="Only text messages are accepted."))


@handle.websocket_disconnect("chat")
def on_leave(ws: WebSocket) -> None:
    room = chat_room_of(ws)  # still listed here; the socket leaves its rooms after this handler
    if room is not None:
        room.broadcast(event("leave", id=ws.id))  # the pages know the nickname from the online list
        room.broadcast(online(room))
