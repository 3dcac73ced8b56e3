"""The chat page and its WebSocket upgrade."""

from __future__ import annotations

from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from wsgroups import HANDLED

from .models import ChatMember
from .rooms import ROOM, clean_nickname, event, max_message_length, online, send_room

NICKNAME_COOKIE_AGE = 365 * 24 * 3600


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "chat.html", {"max_length": max_message_length()})


def chat_socket(request: HttpRequest, room: str) -> HttpResponse:
    """``/ws/chat/<room>?nickname=<name>``: join ``room`` in group ``chat``; the 101 remembers the nickname."""
    nickname = clean_nickname(request.GET.get("nickname"))
    if not ROOM.match(room):
        return HttpResponseBadRequest("A room name is 1-64 letters, digits, '-' or '_'.")
    if nickname is None:
        return HttpResponseBadRequest("A nickname is 1-32 characters, without control characters.")
    if not request.websocket:  # type: ignore[attr-defined]
        return HttpResponseBadRequest("This address takes WebSocket upgrades only.")
    ws = request.websocket.send_upgrade(  # type: ignore[attr-defined]
        "chat",
        cookies=[f"chat_nickname={quote(nickname)}; Path=/; Max-Age={NICKNAME_COOKIE_AGE}; SameSite=Lax"],
    )
    ChatMember.objects.create(websocket_id=ws.id, room=room, nickname=nickname)
    ws.send(event("welcome", id=ws.id, nickname=nickname, room=room, max_length=max_message_length()))
    send_room(room, event("join", id=ws.id, nickname=nickname), exclude=ws.id)
    send_room(room, online(room))
    return HANDLED
