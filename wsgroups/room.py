"""``Room``: a named set of sockets that sockets join and leave while they live (chat
rooms, the viewers of a document, every tab of a user), cluster-wide.

Each server process keeps the memberships of its own sockets in memory
(:mod:`wsgroups.room_table`). The part of a room held here is acted on directly; every
other live server process gets one operation over the channel layer and answers for its
part — one message per process, whatever the number of members, and no database query.
A process that died took its memberships with it, and is no longer asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from . import ops
from .codes import CloseCode
from .group import ask_each_server
from .handshake import check_close
from .room_table import RoomTable, check_room_name, user_room_name
from .runtime import cluster_transport, current_runtime
from .transport import Transport
from .websocket import WebSocket, frame_message, payload_of

__all__ = ["Room", "room_counts"]

T = TypeVar("T")

logger = logging.getLogger("wsgroups")


def _here(func: Callable[[RoomTable], T]) -> T | None:
    """``func`` on this process's room table, on its loop; None if it holds no sockets."""
    runtime = current_runtime()
    return runtime.run_on_loop(lambda: func(runtime.rooms)) if runtime is not None else None


def _total(answers: list[Any]) -> int:
    return sum(int(answer) for answer in answers)


class Room:
    """The sockets of every process that joined room ``name`` (1-200 printable characters)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = check_room_name(name)

    @classmethod
    def for_user(cls, user_or_pk: Any) -> Room:
        """The room of every socket whose upgrade request carried this user (a user or a pk)."""
        return cls(user_room_name(user_or_pk))

    def __repr__(self) -> str:
        return f"<Room {self.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Room) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Room", self.name))

    def _ask(self, op: ops.Query, what: str) -> list[Any]:
        transport = cluster_transport()
        return transport.block_on(ask_each_server(transport, op), what) if transport is not None else []

    async def _aask(self, op: ops.Query) -> list[Any]:
        transport = cluster_transport()
        return await transport.await_on_loop(ask_each_server(transport, op)) if transport is not None else []

    # --- sending ------------------------------------------------------------------

    def _broadcast_parts(
        self, data: str | bytes, exclude: Iterable[WebSocket | int], is_text: bool | None
    ) -> tuple[int, ops.RoomBroadcast]:
        payload = payload_of(frame_message(data, is_text))
        excluded = sorted({int(ws) for ws in exclude})
        count = _here(lambda rooms: rooms.broadcast(self.name, payload, excluded)) or 0
        return count, ops.RoomBroadcast(self.name, payload, excluded)

    def broadcast(self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None) -> int:
        """Send ``data`` to every live member but ``exclude``; return how many took it."""
        count, op = self._broadcast_parts(data, exclude, is_text)
        return count + _total(self._ask(op, "Room.broadcast()"))

    async def abroadcast(
        self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None
    ) -> int:
        """Async :meth:`broadcast`."""
        count, op = self._broadcast_parts(data, exclude, is_text)
        return count + _total(await self._aask(op))

    def disconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Close every live member with ``code`` and reason ``message``; return how many."""
        code, reason = check_close(code, message)
        count = _here(lambda rooms: rooms.close_room(self.name, code, reason)) or 0
        return count + _total(self._ask(ops.RoomClose(self.name, code, reason), "Room.disconnect()"))

    async def adisconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Async :meth:`disconnect`."""
        code, reason = check_close(code, message)
        count = _here(lambda rooms: rooms.close_room(self.name, code, reason)) or 0
        return count + _total(await self._aask(ops.RoomClose(self.name, code, reason)))

    # --- members --------------------------------------------------------------------

    def sockets(self) -> list[WebSocket]:
        """The live members, in every process."""
        ids = _here(lambda rooms: rooms.member_ids(self.name)) or []
        ids += [i for answer in self._ask(ops.RoomMembers(self.name), "Room.sockets()") for i in answer]
        return [WebSocket(i) for i in ids]

    async def asockets(self) -> list[WebSocket]:
        """Async :meth:`sockets`."""
        ids = _here(lambda rooms: rooms.member_ids(self.name)) or []
        ids += [i for answer in await self._aask(ops.RoomMembers(self.name)) for i in answer]
        return [WebSocket(i) for i in ids]

    def presence(self) -> dict[int, Any]:
        """``{socket ID: meta}`` of the live members, in every process."""
        pairs = _here(lambda rooms: rooms.presence(self.name)) or []
        pairs += [pair for answer in self._ask(ops.RoomPresence(self.name), "Room.presence()") for pair in answer]
        return {int(socket_id): meta for socket_id, meta in pairs}

    async def apresence(self) -> dict[int, Any]:
        """Async :meth:`presence`."""
        pairs = _here(lambda rooms: rooms.presence(self.name)) or []
        pairs += [pair for answer in await self._aask(ops.RoomPresence(self.name)) for pair in answer]
        return {int(socket_id): meta for socket_id, meta in pairs}


def room_counts(channels: Iterable[str] | None = None) -> dict[str, int]:
    """Live members of every room with any, cluster-wide (for ``wsstatus`` and the admin).

    ``channels`` are the live server processes to ask, as the caller read them from the
    registry; by default the transport's directory finds them.
    """
    pairs = _here(lambda rooms: rooms.counts()) or []
    servers = None if channels is None else list(channels)
    if servers != []:
        transport = cluster_transport()
        if transport is not None:
            asked = ask_each_server(transport, ops.RoomCounts()) if servers is None else _ask(transport, servers)
            pairs += [pair for answer in transport.block_on(asked, "room_counts()") for pair in answer]
    totals: dict[str, int] = {}
    for room, count in pairs:
        totals[room] = totals.get(room, 0) + int(count)
    return dict(sorted(totals.items()))


async def _ask(transport: Transport, channels: list[str]) -> list[Any]:
    """``RoomCounts`` answered by ``channels`` but this process; those that did not answer are logged."""
    others = [channel for channel in channels if channel != transport.channel_name]
    answers = await asyncio.gather(*(transport.request(c, ops.RoomCounts()) for c in others), return_exceptions=True)
    for channel, answer in zip(others, answers, strict=True):
        if isinstance(answer, BaseException):
            logger.warning("wsgroups: %s did not answer RoomCounts: %s", channel, answer)
    return [answer for answer in answers if not isinstance(answer, BaseException)]
