"""Chat rooms over wsgroups: sends go to the stored socket IDs of a room's members."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from django.conf import settings

from wsgroups import WebSocket

from .models import ChatMember

NICKNAME = re.compile(r"^[^\x00-\x1f\x7f]{1,32}$")
ROOM = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def max_message_length() -> int:
    return int(getattr(settings, "CHAT_MAX_MESSAGE_LENGTH", 500))


def clean_nickname(value: str | None) -> str | None:
    """The nickname without surrounding blanks, or None if it is empty, too long or has control characters."""
    value = (value or "").strip()
    return value if NICKNAME.match(value) else None


def event(kind: str, **fields: Any) -> str:
    """A chat event for the page: ``type``, ``at`` (the server's time, ms since the epoch) and ``fields``."""
    return json.dumps({"type": kind, "at": int(time.time() * 1000), **fields})


def members(room: str) -> list[ChatMember]:
    return list(ChatMember.objects.filter(room=room))


def send_room(room: str, text: str, exclude: int | None = None) -> int:
    """Send ``text`` to every member of ``room`` but ``exclude``, in whichever process they are."""
    sent = 0
    for member in members(room):
        if member.websocket_id != exclude and WebSocket(member.websocket_id).send(text):
            sent += 1
    return sent


def online(room: str) -> str:
    return event("online", members=[{"id": m.websocket_id, "nickname": m.nickname} for m in members(room)])
