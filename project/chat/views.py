"""The chat page, its WebSocket upgrade, and "notify my tabs" (every socket of the logged-in user)."""

from __future__ import annotations

from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from wsgroups import HANDLED, Room

from .rooms import ROOM, chat_room, clean_nickname, event, max_message_length, online

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
    members = chat_room(room)
    ws.join(members.name, meta={"nickname": nickname})
    ws.send(event("welcome", id=ws.id, nickname=nickname, room=room, max_length=max_message_length()))
    members.broadcast(event("join", id=ws.id, nickname=nickname), exclude=[ws])
    members.broadcast(online(members))
    return HANDLED


@require_POST
def notify_me(request: HttpRequest) -> HttpResponse:
    """Send a notice to every chat tab of the logged-in user, on every server process."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Log in (at /admin/) to notify your tabs."}, status=403)
    sent = Room.for_user(request.user).broadcast(event("notice", text=f"A notice for {request.user.get_username()}."))
    return JsonResponse({"sent": sent})
