"""The sockets this process holds, by ID, by group and by session: the local half of every
cluster-wide operation.

A :class:`SocketTable` changes only on the server's event loop. Group operations that
arrive from other processes, and those made here, act on it through the methods below;
each one touches only sockets that are open.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .outbox import LocalSocket

__all__ = ["SocketTable", "frame"]


def frame(payload: str | bytes) -> dict[str, Any]:
    """The ASGI ``websocket.send`` message for a payload: str → text, bytes → binary."""
    if isinstance(payload, str):
        return {"type": "websocket.send", "text": payload}
    return {"type": "websocket.send", "bytes": payload}


class SocketTable:
    """Sockets of this process. ``counters`` gets ``opened`` and ``closed`` counts."""

    __slots__ = ("by_group", "by_id", "by_session", "counters")

    def __init__(self, counters: dict[str, int]) -> None:
        self.by_id: dict[int, LocalSocket] = {}
        self.by_group: dict[str, dict[int, LocalSocket]] = {}
        #: session key → ID of the session's most recently active socket here
        self.by_session: dict[str, int] = {}
        self.counters = counters

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, socket_id: int) -> LocalSocket | None:
        return self.by_id.get(socket_id)

    def group_size(self, group: str) -> int:
        """Sockets of ``group`` here, closing ones included (for the per-group limit)."""
        return len(self.by_group.get(group, ()))

    def add(self, sock: LocalSocket) -> None:
        self.by_id[sock.id] = sock
        self.by_group.setdefault(sock.group, {})[sock.id] = sock
        if sock.session_key:
            self.by_session[sock.session_key] = sock.id
        self.counters["opened"] += 1

    def remove(self, sock: LocalSocket) -> bool:
        """Forget ``sock``; False if it was not here."""
        if self.by_id.pop(sock.id, None) is None:
            return False
        members = self.by_group.get(sock.group)
        if members is not None:
            members.pop(sock.id, None)
            if not members:
                del self.by_group[sock.group]
        if sock.session_key and self.by_session.get(sock.session_key) == sock.id:
            del self.by_session[sock.session_key]
        self.counters["closed"] += 1
        return True

    def touch_session(self, sock: LocalSocket) -> None:
        """``sock`` is now its session's most recently active socket."""
        if sock.session_key:
            self.by_session[sock.session_key] = sock.id

    def members(self, group: str) -> list[LocalSocket]:
        """The open sockets of ``group``."""
        return [sock for sock in self.by_group.get(group, {}).values() if sock.is_open]

    def member_ids(self, group: str) -> list[int]:
        return [sock.id for sock in self.members(group)]

    def open_ids(self, socket_ids: Iterable[int]) -> list[int]:
        """Those of ``socket_ids`` that name an open socket here."""
        by_id = self.by_id
        return [i for i in socket_ids if (sock := by_id.get(i)) is not None and sock.is_open]

    def broadcast(self, group: str, payload: str | bytes, excluded: Iterable[int] = ()) -> int:
        """Queue ``payload`` for every open socket of ``group`` but ``excluded``; return how many."""
        message = frame(payload)
        skip = set(excluded)
        count = 0
        for sock in self.members(group):
            if sock.id not in skip:
                sock.enqueue(message)
                count += 1
        return count

    def close_group(self, group: str, code: int, reason: str) -> int:
        """Close every open socket of ``group``; return how many."""
        members = self.members(group)
        for sock in members:
            sock.close(code, reason)
        return len(members)

    def close_all(self, code: int, reason: str, *, reaped: bool = False) -> list[LocalSocket]:
        """Close every socket here (marking them ``reaped`` if asked); return them."""
        socks = list(self.by_id.values())
        for sock in socks:
            sock.reaped = sock.reaped or reaped
            sock.close(code, reason)
        return socks
