"""The rooms of the sockets this process holds: membership by room and by socket, and the
rules for room names and members' metadata.

A room is cluster-wide, but each process knows only the memberships of its own sockets,
and keeps them here, in memory: a room operation from any process reaches every server
process once and each answers for its part (see :mod:`wsgroups.room`). When a process
dies its memberships die with it — nothing else needs cleaning up (the registry's copy
below is read only by the reaper).

A :class:`RoomTable` changes only on the server's event loop. A socket stays in its
rooms until :meth:`RoomTable.forget` (after its disconnect handler ran, so the handler
still sees them); broadcasts, member lists and presence count only open sockets.

So that the disconnect handlers the reaper runs after a crash still see a socket's rooms,
the table notes which sockets' rooms changed; the runtime writes their room lists to the
registry with its next batch (:meth:`RoomTable.take_changed`), never on a message's path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from .outbox import LocalSocket
from .socket_table import frame

__all__ = ["MAX_ROOM_NAME", "USER_ROOM_PREFIX", "RoomTable", "check_meta", "check_room_name", "user_room_name"]

#: The longest room name, in characters.
MAX_ROOM_NAME = 200
#: Rooms named ``wsgroups.user:<pk>`` hold every socket upgraded by that user.
USER_ROOM_PREFIX = "wsgroups.user:"


def check_room_name(name: object, argument: str = "name") -> str:
    """``name`` if it is a valid room name (1-200 printable characters), else ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"{argument} must be a room name (str), got {type(name).__name__}")
    if not name:
        raise ValueError(f"{argument} must not be empty")
    if len(name) > MAX_ROOM_NAME:
        raise ValueError(f"{argument} is {len(name)} characters long; a room name has at most {MAX_ROOM_NAME}")
    if not name.isprintable():
        raise ValueError(f"{argument} {name[:40]!r} has control characters; a room name is printable characters")
    return name


def check_meta(meta: object) -> Any:
    """``meta`` as every process will see it (a JSON round trip), else ValueError."""
    if meta is None:
        return None
    try:
        return json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serializable: {exc}") from None


def user_room_name(user_or_pk: object) -> str:
    """The room of every socket upgraded by a user (a user object or its primary key)."""
    pk = getattr(user_or_pk, "pk", user_or_pk)
    if pk is None or isinstance(pk, bool) or pk == "":
        raise ValueError(f"user must be a saved user or a primary key, got {user_or_pk!r}")
    return check_room_name(f"{USER_ROOM_PREFIX}{pk}", "user")


class RoomTable:
    """Memberships of this process's sockets: room → {socket ID: (socket, meta)}."""

    __slots__ = ("by_room", "by_socket", "changed", "on_change")

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.by_room: dict[str, dict[int, tuple[LocalSocket, Any]]] = {}
        #: socket ID → the names of the rooms it is in
        self.by_socket: dict[int, set[str]] = {}
        #: IDs of the sockets whose rooms changed since :meth:`take_changed`
        self.changed: set[int] = set()
        #: Called when a socket's rooms change (the runtime wakes its registry writer).
        self.on_change = on_change

    def _changed(self, socket_id: int) -> None:
        self.changed.add(socket_id)
        if self.on_change is not None:
            self.on_change()

    def join(self, sock: LocalSocket, room: str, meta: Any = None) -> bool:
        """Put ``sock`` in ``room`` (a member already gets the new ``meta``); False if it is not open."""
        if not sock.is_open:
            return False
        self.by_room.setdefault(room, {})[sock.id] = (sock, meta)
        rooms = self.by_socket.setdefault(sock.id, set())
        if room not in rooms:
            rooms.add(room)
            self._changed(sock.id)
        return True

    def leave(self, socket_id: int, room: str) -> bool:
        """Take the socket out of ``room``; False if it was not a member."""
        rooms = self.by_socket.get(socket_id)
        if rooms is None or room not in rooms:
            return False
        rooms.discard(room)
        if not rooms:
            del self.by_socket[socket_id]
        self._drop(room, socket_id)
        self._changed(socket_id)
        return True

    def rooms_of(self, socket_id: int) -> list[str]:
        """The rooms the socket is in (a closed socket's until it is forgotten)."""
        return sorted(self.by_socket.get(socket_id, ()))

    def forget(self, socket_id: int) -> None:
        """The socket ended and its disconnect handler ran: out of every room."""
        self.changed.discard(socket_id)  # its registry row is closed: nothing more to record
        for room in self.by_socket.pop(socket_id, ()):
            self._drop(room, socket_id)

    def take_changed(self) -> dict[int, list[str]]:
        """``{socket ID: its rooms}`` of the sockets whose rooms changed since the last call."""
        changed, self.changed = self.changed, set()
        return {socket_id: self.rooms_of(socket_id) for socket_id in changed}

    def _drop(self, room: str, socket_id: int) -> None:
        members = self.by_room.get(room)
        if members is not None:
            members.pop(socket_id, None)
            if not members:
                del self.by_room[room]

    def members(self, room: str) -> list[LocalSocket]:
        """The open sockets in ``room``."""
        return [sock for sock, _ in self.by_room.get(room, {}).values() if sock.is_open]

    def member_ids(self, room: str) -> list[int]:
        return [sock.id for sock in self.members(room)]

    def presence(self, room: str) -> list[list[Any]]:
        """``[socket ID, meta]`` of every open socket in ``room`` (pairs: they travel as msgpack)."""
        return [[sock.id, meta] for sock, meta in self.by_room.get(room, {}).values() if sock.is_open]

    def broadcast(self, room: str, payload: str | bytes, excluded: Iterable[int] = ()) -> int:
        """Queue ``payload`` for every open socket in ``room`` but ``excluded``; return how many."""
        message = frame(payload)
        skip = set(excluded)
        count = 0
        for sock, _ in self.by_room.get(room, {}).values():
            if sock.is_open and sock.id not in skip:
                sock.enqueue(message)
                count += 1
        return count

    def close_room(self, room: str, code: int, reason: str) -> int:
        """Close every open socket in ``room``; return how many."""
        members = self.members(room)
        for sock in members:
            sock.close(code, reason)
        return len(members)

    def counts(self) -> list[list[Any]]:
        """``[room, open members]`` of every room with an open member here."""
        counted = (
            [room, sum(1 for sock, _ in members.values() if sock.is_open)] for room, members in self.by_room.items()
        )
        return [pair for pair in counted if pair[1]]
