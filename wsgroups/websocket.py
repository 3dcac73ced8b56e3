"""The public socket API: :class:`WebSocket` (sending, closing, rooms) and
:func:`active_websocket` (``Group`` is in :mod:`wsgroups.group`, ``Room`` in
:mod:`wsgroups.room`, ``HANDLED`` in :mod:`wsgroups.handled`).

Every call works from any process. A socket held by the calling process is acted on
directly; any other goes through the :mod:`~wsgroups.transport` to the process that
holds it (found from the ID alone). Sends never wait for the network: they return
False only when the socket is known to be dead. Calls that need an answer from other
processes (``is_dead``, ``Group.broadcast``'s count, ``Group.sockets``) wait for it; on
an event loop use their ``a``-versions.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings

from . import ops
from .codes import CloseCode, ConnectionFlags
from .handshake import check_close
from .ids import split_id, validate_id
from .models import Connection
from .outbox import LocalSocket
from .room_table import check_meta, check_room_name
from .runtime import Runtime, cluster_transport, current_runtime, get_transport
from .transport import Transport

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

__all__ = ["WebSocket", "active_websocket", "current_socket", "frame_message", "payload_of"]

_UNSET: Any = object()

T = TypeVar("T")

#: The socket whose handler runs (``WebSocket.current``).
current_socket: contextvars.ContextVar[WebSocket | None] = contextvars.ContextVar("wsgroups_current", default=None)


def frame_message(data: object, is_text: bool | None) -> dict[str, Any]:
    """The ASGI ``websocket.send`` message for ``data``: str → text, bytes → binary."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if isinstance(data, str):
        if is_text is False:
            return {"type": "websocket.send", "bytes": data.encode("utf-8")}
        return {"type": "websocket.send", "text": data}
    if isinstance(data, bytes):
        if is_text:
            try:
                return {"type": "websocket.send", "text": data.decode("utf-8")}
            except UnicodeDecodeError:
                raise ValueError("data: bytes sent with is_text=True must be valid UTF-8") from None
        return {"type": "websocket.send", "bytes": data}
    raise TypeError(f"data must be str or bytes, got {type(data).__name__}")


def payload_of(message: dict[str, Any]) -> str | bytes:
    """The text or bytes of a ``websocket.send`` message."""
    text: str | None = message.get("text")
    if text is not None:
        return text
    data: bytes = message["bytes"]
    return data


def _flags(flags: object) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"flags must be ConnectionFlags, got {flags!r}")
    return int(ConnectionFlags(flags))


def _on_any_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Current:
    """``WebSocket.current``: the socket whose handler is running, else None."""

    def __get__(self, instance: object, owner: type) -> WebSocket | None:
        return current_socket.get()


class WebSocket:
    """A socket, addressed by its ID. Cheap to create; holds no connection itself.

    ``WebSocket(id)`` restores a socket from an ID stored earlier (in the database,
    a session, a message), in any process; every method is a no-op reported by its
    return value when the socket is gone.
    """

    __slots__ = ("_group", "_id", "_recorded_rooms", "_session", "_session_key")

    current = _Current()

    def __init__(self, id: int | str) -> None:
        self._id = validate_id(id, "id")
        self._session: SessionBase | None = None
        self._group: str | None = _UNSET
        self._session_key: str | None = _UNSET
        self._recorded_rooms: list[str] | None = None

    @classmethod
    def restore(
        cls, socket_id: int, group: str, session_key: str | None, rooms: Sequence[str] | None = None
    ) -> WebSocket:
        """A WebSocket whose group and session key are already known (a socket that ended);
        ``rooms``, for a socket whose process died, are what :meth:`rooms` lists."""
        ws = cls(socket_id)
        ws._group, ws._session_key = group, session_key
        ws._recorded_rooms = None if rooms is None else sorted(rooms)
        return ws

    def recorded_rooms(self) -> list[str] | None:
        """The rooms the registry recorded for a socket whose process died (given to
        :meth:`restore`), None for any other socket."""
        return self._recorded_rooms

    @property
    def id(self) -> int:
        return self._id

    def session_key_hint(self) -> str | None:
        """The attached session's key if known without a database query."""
        if self._session_key is not _UNSET:
            return self._session_key
        sock = self._local()
        return sock.session_key if sock is not None else None

    def __int__(self) -> int:
        return self._id

    def __index__(self) -> int:
        return self._id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WebSocket) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"<WebSocket {self._id}>"

    def _local(self) -> LocalSocket | None:
        runtime = current_runtime()
        return runtime.table.get(self._id) if runtime else None

    def _remote_transport(self) -> Transport | None:
        """The transport to reach this socket in another process; None if it is known to be dead.

        The first contact with an ID block looks its owner up (once per block, and only
        where blocking is allowed); afterwards the answer comes from the cache.
        """
        if self._held_here():
            return None
        transport = cluster_transport()
        if transport is None:
            return None
        block = split_id(self._id)[0]
        verdict = transport.directory.cached_verdict(block)
        if verdict is None and not transport.on_loop() and not _on_any_loop():
            transport.block_on(transport.directory.channel_for_block(block), "looking up a WebSocket ID")
            verdict = transport.directory.cached_verdict(block)
        return None if verdict else transport

    def _held_here(self) -> bool:
        """Whether this process allocated the ID (so no other process can hold it)."""
        runtime = current_runtime()
        return runtime is not None and runtime.owns_block(split_id(self._id)[0])

    # --- sending ----------------------------------------------------------------

    def send(
        self,
        data: str | bytes,
        is_text: bool | None = None,
        flags: ConnectionFlags = ConnectionFlags.NO_SPECIAL_FLAGS,
    ) -> bool:
        """Queue a frame; False if the socket is known to be dead.

        Frames from one sender to one socket arrive in the order they were sent. Raises
        :class:`~wsgroups.exceptions.TransportError` when the socket is in another process
        and the channel layer is unreachable.
        """
        message = frame_message(data, is_text)
        flag_bits = _flags(flags)
        sock = self._local()
        if sock is not None:
            return sock.send_threadsafe(message, flag_bits)
        transport = self._remote_transport()
        if transport is None:
            return False
        transport.queue(split_id(self._id)[0], ops.Send(self._id, payload_of(message), flag_bits))
        return True

    async def asend(
        self,
        data: str | bytes,
        is_text: bool | None = None,
        flags: ConnectionFlags = ConnectionFlags.NO_SPECIAL_FLAGS,
    ) -> bool:
        """Async :meth:`send` (it never waits for the network either)."""
        return self.send(data, is_text, flags)

    def disconnect(self, message: str | None = None, code: int = CloseCode.NORMAL) -> bool:
        """Close with ``code`` and reason ``message`` (≤ 123 UTF-8 bytes); False if known dead."""
        code, reason = check_close(code, message)
        sock = self._local()
        if sock is not None:
            return sock.close_threadsafe(code, reason)
        transport = self._remote_transport()
        if transport is None:
            return False
        transport.queue(split_id(self._id)[0], ops.Close(self._id, code, reason))
        return True

    async def adisconnect(self, message: str | None = None, code: int = CloseCode.NORMAL) -> bool:
        """Async :meth:`disconnect`."""
        return self.disconnect(message, code)

    def _dead_here(self) -> bool | None:
        """The verdict when this process can give it alone (it holds the ID, or nobody can), else None."""
        sock = self._local()
        if sock is not None or self._held_here():
            return sock is None or not sock.is_open
        return True if cluster_transport() is None else None

    def is_dead(self) -> bool:
        """True once the socket is closed (or closing), or when the ID names no socket."""
        verdict = self._dead_here()
        if verdict is not None:
            return verdict
        transport = get_transport()
        return transport.block_on(_remote_dead(transport, self._id), "WebSocket.is_dead()")

    async def ais_dead(self) -> bool:
        """Async :meth:`is_dead`."""
        verdict = self._dead_here()
        if verdict is not None:
            return verdict
        transport = get_transport()
        return await transport.await_on_loop(_remote_dead(transport, self._id))

    # --- rooms ----------------------------------------------------------------------

    def _on_holder(self, local: Callable[[Runtime], T], op: ops.Query, what: str) -> T:
        """``local`` on the holder's room table if this process holds the socket, else ``op``
        answered by the holder (its empty answer when the socket cannot be anywhere)."""
        runtime = current_runtime()
        if runtime is not None and runtime.owns_block(split_id(self._id)[0]):
            return runtime.run_on_loop(lambda: local(runtime))
        transport = cluster_transport()
        if transport is None:
            answer: T = ops.empty_answer(op)
            return answer
        answered: T = transport.block_on(_ask_holder(transport, self._id, op), what)
        return answered

    async def _aon_holder(self, local: Callable[[Runtime], T], op: ops.Query) -> T:
        runtime = current_runtime()
        if runtime is not None and runtime.owns_block(split_id(self._id)[0]):
            return runtime.run_on_loop(lambda: local(runtime))
        transport = cluster_transport()
        if transport is None:
            answer: T = ops.empty_answer(op)
            return answer
        return await transport.await_on_loop(_ask_holder(transport, self._id, op))

    def _joiner(self, room: str, meta: Any) -> Callable[[Runtime], bool]:
        def join_here(runtime: Runtime) -> bool:
            sock = runtime.table.get(self._id)
            return sock is not None and runtime.rooms.join(sock, room, meta)

        return join_here

    def join(self, name: str, meta: Any = None) -> bool:
        """Put the socket in room ``name`` (a member gets the new ``meta``, any JSON value,
        shown by ``Room.presence()``); False if the socket is dead."""
        room, meta = check_room_name(name), check_meta(meta)
        op = ops.Join(self._id, room, meta)
        return bool(self._on_holder(self._joiner(room, meta), op, "WebSocket.join()"))

    async def ajoin(self, name: str, meta: Any = None) -> bool:
        """Async :meth:`join`."""
        room, meta = check_room_name(name), check_meta(meta)
        return bool(await self._aon_holder(self._joiner(room, meta), ops.Join(self._id, room, meta)))

    def leave(self, name: str) -> bool:
        """Take the socket out of room ``name``; False if it was not a member."""
        room = check_room_name(name)
        op = ops.Leave(self._id, room)
        return bool(self._on_holder(lambda runtime: runtime.rooms.leave(self._id, room), op, "WebSocket.leave()"))

    async def aleave(self, name: str) -> bool:
        """Async :meth:`leave`."""
        room = check_room_name(name)
        return bool(
            await self._aon_holder(lambda runtime: runtime.rooms.leave(self._id, room), ops.Leave(self._id, room))
        )

    def rooms(self) -> set[str]:
        """The names of the rooms the socket is in (in its disconnect handler, still those it
        was in — for a socket whose process died, as the registry last recorded them)."""
        if self._recorded_rooms is not None:
            return set(self._recorded_rooms)
        return set(
            self._on_holder(lambda runtime: runtime.rooms.rooms_of(self._id), ops.Rooms(self._id), "WebSocket.rooms()")
        )

    async def arooms(self) -> set[str]:
        """Async :meth:`rooms`."""
        if self._recorded_rooms is not None:
            return set(self._recorded_rooms)
        return set(await self._aon_holder(lambda runtime: runtime.rooms.rooms_of(self._id), ops.Rooms(self._id)))

    # --- attributes ---------------------------------------------------------------

    def _registry(self) -> tuple[str | None, str | None]:
        if self._group is _UNSET:
            sock = self._local()
            if sock is not None:
                return sock.group, sock.session_key
            row = Connection.objects.filter(pk=self._id).values_list("group", "session_key").first()
            self._group, self._session_key = (row[0], row[1] or None) if row else (None, None)
        return self._group, self._session_key

    @property
    def group(self) -> str | None:
        """The group given to ``send_upgrade``; None for an ID that names no socket."""
        return self._registry()[0]

    @property
    def session(self) -> SessionBase | None:
        """The session attached at upgrade (a fresh ``SessionStore`` for its key), or None."""
        if self._session is None:
            session_key = self._registry()[1]
            if not session_key:
                return None
            engine = import_module(settings.SESSION_ENGINE)
            self._session = engine.SessionStore(session_key)
        return self._session


async def _remote_dead(transport: Transport, socket_id: int) -> bool:
    channel = await transport.directory.channel_for_block(split_id(socket_id)[0])
    if channel is None:
        return True
    alive = await transport.request(channel, ops.Alive([socket_id]))
    return socket_id not in alive


async def _ask_holder(transport: Transport, socket_id: int, op: ops.Query) -> Any:
    """``op``'s answer from the process holding ``socket_id`` (the empty answer if it is gone)."""
    channel = await transport.directory.channel_for_block(split_id(socket_id)[0])
    if channel is None:
        return ops.empty_answer(op)
    return await transport.request(channel, op)


def active_websocket(session: SessionBase | None) -> WebSocket | None:
    """The session's most recently active live WebSocket, or None.

    Sockets of this process are ranked by their last frame; those of other processes
    (from the registry) by when they opened.
    """
    key = getattr(session, "session_key", None)
    if not key:
        return None
    runtime = current_runtime()
    socket_id = runtime.table.by_session.get(key) if runtime else None
    if socket_id is not None:
        ws = WebSocket(socket_id)
        if not ws.is_dead():
            return ws
    for candidate in (
        Connection.objects.live().filter(session_key=key).order_by("-opened_at").values_list("pk", flat=True)[:5]
    ):
        ws = WebSocket(candidate)
        if not ws.is_dead():
            return ws
    return None
