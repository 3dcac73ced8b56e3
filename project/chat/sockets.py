"""Handlers of group ``chat``: a message goes to everyone else in the sender's room."""

from __future__ import annotations

from wsgroups import WebSocket, handle

from .models import ChatMember
from .rooms import event, max_message_length, online, send_room


@handle.websocket("chat")
def on_message(text: str, ws: WebSocket) -> None:
    member = ChatMember.objects.filter(websocket_id=ws.id).first()
    if member is None:
        return
    text = text.strip()
    if not text:
        ws.send(event("error", reason="Empty messages are not sent."))
        return
    if len(text) > max_message_length():
        ws.send(event("error", reason=f"Messages are at most {max_message_length()} characters."))
        return
    send_room(member.room, event("message", id=ws.id, nickname=member.nickname, text=text), exclude=ws.id)


@handle.websocket("chat")
def on_binary(data: bytes, ws: WebSocket) -> None:
    ws.send(event("error", reason="Only text messages are accepted."))


@handle.websocket_disconnect("chat")
def on_leave(ws: WebSocket) -> None:
    member = ChatMember.objects.filter(websocket_id=ws.id).first()
    if member is None:
        return
    member.delete()
    send_room(member.room, event("leave", id=ws.id, nickname=member.nickname))
    send_room(member.room, online(member.room))
