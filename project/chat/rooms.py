"""Chat rooms on wsgroups rooms: a chat room ``lobby`` is the wsgroups room ``chat:lobby``,
whose members carry their nickname as presence meta."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from django.conf import settings

from wsgroups import Room, WebSocket

NICKNAME = re.compile(r"^[^\x00-\x1f\x7f]{1,32}$")
ROOM = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PREFIX = "chat:"


def max_message_length() -> int:
    return int(getattr(settings, "CHAT_MAX_MESSAGE_LENGTH", 500))


def clean_nickname(value: str | None) -> str | None:
    """The nickname without surrounding blanks, or None if it is empty, too long or has control characters."""
    value = (value or "").strip()
    return value if NICKNAME.match(value) else None


def event(kind: str, **fields: Any) -> str:
    """A chat event for the page: ``type``, ``at`` (the server's time, ms since the epoch) and ``fields``."""
    return json.dumps({"type": kind, "at": int(time.time() * 1000), **fields})


def chat_room(name: str) -> Room:
    return Room(PREFIX + name)


def chat_room_of(ws: WebSocket) -> Room | None:
    """The chat room ``ws`` is in (in its disconnect handler: was in), or None."""
    names = [name for name in ws.rooms() if name.startswith(PREFIX)]
    return Room(names[0]) if names else None


def online(room: Room) -> str:
    """The ``online`` event: the room's live members with their nicknames, from its presence."""
    members = [{"id": socket_id, "nickname": meta["nickname"]} for socket_id, meta in sorted(room.presence().items())]
    return event("online", members=members)
