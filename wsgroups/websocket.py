"""The public socket API: :class:`WebSocket`, :class:`Group`, :func:`active_websocket`, ``HANDLED``.

Every call works from any process. A socket held by the calling process is acted on
directly; any other goes through the :mod:`~wsgroups.transport` to the process that
holds it (found from the ID alone). Sends never wait for the network: they return
False only when the socket is known to be dead. Calls that need an answer from other
processes (``is_dead``, ``Group.broadcast``'s count, ``Group.sockets``) wait for it; on
an event loop use their ``a``-versions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from http.cookies import Morsel, SimpleCookie
from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpResponse
from django.http.response import ResponseHeaders

from .codes import CloseCode, ConnectionFlags
from .conf import conf
from .handshake import check_close
from .ids import split_id, validate_id
from .runtime import LocalSocket, current_runtime, current_socket
from .transport import OP_ALIVE, OP_BROADCAST, OP_CLOSE, OP_GROUP_CLOSE, OP_MEMBERS, OP_SEND, Transport, get_transport

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

__all__ = ["HANDLED", "Group", "WebSocket", "active_websocket", "frame_message"]

logger = logging.getLogger("wsgroups")

_UNSET: Any = object()


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


def _payload(message: dict[str, Any]) -> str | bytes:
    text: str | None = message.get("text")
    if text is not None:
        return text
    data: bytes = message["bytes"]
    return data


def _flags(flags: object) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"flags must be ConnectionFlags, got {flags!r}")
    return int(ConnectionFlags(flags))


def _transport() -> Transport | None:
    """The transport, or None when no channel layer is configured (in-process only)."""
    if conf.CHANNEL_LAYER not in (getattr(settings, "CHANNEL_LAYERS", None) or {}):
        return None
    return get_transport()


def _on_any_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Current:
    """``WebSocket.current``: the socket whose handler is running, else None."""

    def __get__(self, instance: object, owner: type) -> WebSocket | None:
        value: WebSocket | None = current_socket.get()
        return value


class WebSocket:
    """A socket, addressed by its ID. Cheap to create; holds no connection itself.

    ``WebSocket(id)`` restores a socket from an ID stored earlier (in the database,
    a session, a message), in any process; every method is a no-op reported by its
    return value when the socket is gone.
    """

    __slots__ = ("_group", "_id", "_session", "_session_key")

    current = _Current()

    def __init__(self, id: int | str) -> None:
        self._id = validate_id(id, "id")
        self._session: SessionBase | None = None
        self._group: str | None = _UNSET
        self._session_key: str | None = _UNSET

    @classmethod
    def restore(cls, socket_id: int, group: str, session_key: str | None) -> WebSocket:
        """A WebSocket whose group and session key are already known (a socket that ended)."""
        ws = cls(socket_id)
        ws._group, ws._session_key = group, session_key
        return ws

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
        return runtime.sockets.get(self._id) if runtime else None

    def _remote_transport(self) -> Transport | None:
        """The transport to reach this socket in another process; None if it is known to be dead.

        The first contact with an ID block looks its owner up (once per block, and only
        where blocking is allowed); afterwards the answer comes from the cache.
        """
        if self._held_here():
            return None
        transport = _transport()
        if transport is None:
            return None
        block = split_id(self._id)[0]
        verdict = transport.directory.cached_verdict(block)
        if verdict is None and not transport.on_loop() and not _on_any_loop():
            transport.call(transport.directory.channel_for_block(block), "looking up a WebSocket ID")
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
            if sock.state != "open":
                return False
            if sock._on_loop():
                return sock.apply(message, flag_bits)
            sock.loop.call_soon_threadsafe(sock.apply, message, flag_bits)
            return True
        transport = self._remote_transport()
        if transport is None:
            return False
        transport.submit(split_id(self._id)[0], [OP_SEND, self._id, _payload(message), flag_bits])
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
            return sock.submit_close(code, reason)
        transport = self._remote_transport()
        if transport is None:
            return False
        transport.submit(split_id(self._id)[0], [OP_CLOSE, self._id, code, reason])
        return True

    async def adisconnect(self, message: str | None = None, code: int = CloseCode.NORMAL) -> bool:
        """Async :meth:`disconnect`."""
        return self.disconnect(message, code)

    def _dead_here(self) -> bool | None:
        """The verdict when this process can give it alone (it holds the ID, or nobody can), else None."""
        sock = self._local()
        if sock is not None or self._held_here():
            return sock is None or not sock.is_open
        return True if _transport() is None else None

    def is_dead(self) -> bool:
        """True once the socket is closed (or closing), or when the ID names no socket."""
        verdict = self._dead_here()
        if verdict is not None:
            return verdict
        transport = get_transport()
        return transport.call(_remote_dead(transport, self._id), "WebSocket.is_dead()")

    async def ais_dead(self) -> bool:
        """Async :meth:`is_dead`."""
        verdict = self._dead_here()
        if verdict is not None:
            return verdict
        transport = get_transport()
        return await transport.acall(_remote_dead(transport, self._id))

    # --- attributes ---------------------------------------------------------------

    def _registry(self) -> tuple[str | None, str | None]:
        if self._group is _UNSET:
            sock = self._local()
            if sock is not None:
                return sock.group, sock.session_key
            from .models import Connection

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
    alive = await transport.request(channel, [OP_ALIVE, [socket_id]])
    return socket_id not in alive


async def _each_server(transport: Transport, op: list[Any]) -> list[Any]:
    """Ask every live server process except this one; answers of those that replied."""
    servers = [s for s in await transport.directory.live_servers() if s.channel_name != transport.channel_name]
    answers = await asyncio.gather(*(transport.request(s.channel_name, op) for s in servers), return_exceptions=True)
    results = []
    for server, answer in zip(servers, answers, strict=True):
        if isinstance(answer, BaseException):
            logger.warning("wsgroups: process #%s did not answer %s: %s", server.id, op[0], answer)
        else:
            results.append(answer)
    return results


async def _sum(transport: Transport, op: list[Any]) -> int:
    return sum(await _each_server(transport, op))


async def _members(transport: Transport, group: str) -> list[int]:
    return [socket_id for answer in await _each_server(transport, [OP_MEMBERS, group]) for socket_id in answer]


class Group:
    """All sockets upgraded into one group name, in every process."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty group name, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"<Group {self.name!r}>"

    def _local_broadcast(self, payload: str | bytes, excluded: set[int]) -> int:
        runtime = current_runtime()
        return runtime.call(lambda: runtime.broadcast_local(self.name, payload, excluded)) if runtime else 0

    def _local_close(self, code: int, reason: str) -> int:
        runtime = current_runtime()
        return runtime.call(lambda: runtime.close_group_local(self.name, code, reason)) if runtime else 0

    def _local_members(self) -> list[int]:
        runtime = current_runtime()
        return runtime.call(lambda: [sock.id for sock in runtime.members(self.name)]) if runtime else []

    def broadcast(self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None) -> int:
        """Send ``data`` to every live socket of the group but ``exclude``; return how many took it."""
        payload = _payload(frame_message(data, is_text))
        excluded = {int(ws) for ws in exclude}
        count = self._local_broadcast(payload, excluded)
        transport = _transport()
        if transport is not None:
            op = [OP_BROADCAST, self.name, payload, sorted(excluded)]
            count += transport.call(_sum(transport, op), "Group.broadcast()")
        return count

    async def abroadcast(
        self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None
    ) -> int:
        """Async :meth:`broadcast`."""
        payload = _payload(frame_message(data, is_text))
        excluded = {int(ws) for ws in exclude}
        count = self._local_broadcast(payload, excluded)
        transport = _transport()
        if transport is not None:
            count += await transport.acall(_sum(transport, [OP_BROADCAST, self.name, payload, sorted(excluded)]))
        return count

    def disconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Close every live socket of the group; return how many were closed."""
        code, reason = check_close(code, message)
        count = self._local_close(code, reason)
        transport = _transport()
        if transport is not None:
            count += transport.call(_sum(transport, [OP_GROUP_CLOSE, self.name, code, reason]), "Group.disconnect()")
        return count

    async def adisconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Async :meth:`disconnect`."""
        code, reason = check_close(code, message)
        count = self._local_close(code, reason)
        transport = _transport()
        if transport is not None:
            count += await transport.acall(_sum(transport, [OP_GROUP_CLOSE, self.name, code, reason]))
        return count

    def sockets(self) -> list[WebSocket]:
        """The live sockets of the group, in every process."""
        ids = self._local_members()
        transport = _transport()
        if transport is not None:
            ids += transport.call(_members(transport, self.name), "Group.sockets()")
        return [WebSocket(socket_id) for socket_id in ids]

    async def asockets(self) -> list[WebSocket]:
        """Async :meth:`sockets`."""
        ids = self._local_members()
        transport = _transport()
        if transport is not None:
            ids += await transport.acall(_members(transport, self.name))
        return [WebSocket(socket_id) for socket_id in ids]


def active_websocket(session: SessionBase | None) -> WebSocket | None:
    """The session's most recently active live WebSocket, or None.

    Sockets of this process are ranked by their last frame; those of other processes
    (from the registry) by when they opened.
    """
    key = getattr(session, "session_key", None)
    if not key:
        return None
    runtime = current_runtime()
    socket_id = runtime.session_sockets.get(key) if runtime else None
    if socket_id is not None:
        ws = WebSocket(socket_id)
        if not ws.is_dead():
            return ws
    from .models import Connection

    for candidate in (
        Connection.objects.live().filter(session_key=key).order_by("-opened_at").values_list("pk", flat=True)[:5]
    ):
        ws = WebSocket(candidate)
        if not ws.is_dead():
            return ws
    return None


class _DiscardedCookies(SimpleCookie):
    """A cookie jar that forgets every write, so ``set_cookie`` on ``HANDLED`` is harmless."""

    def __setitem__(self, key: str, value: Any) -> None:
        pass

    def __getitem__(self, key: str) -> Morsel[str]:
        return Morsel()


class _Handled(HttpResponse):
    """The response a view returns after ``send_upgrade``: the 101 already went out.

    It is one shared object, so whatever middleware writes into its headers or cookies
    goes to a throwaway copy and never leaks between requests.
    """

    def __init__(self) -> None:
        super().__init__(status=101, content_type="text/plain", charset="utf-8")

    @property
    def headers(self) -> ResponseHeaders:
        return ResponseHeaders({})

    @headers.setter
    def headers(self, value: ResponseHeaders) -> None:
        pass

    @property
    def cookies(self) -> Any:
        return _DiscardedCookies()

    @cookies.setter
    def cookies(self, value: Any) -> None:
        pass

    @property
    def _resource_closers(self) -> list[Any]:
        return []

    @_resource_closers.setter
    def _resource_closers(self, value: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "HANDLED"


#: Return this from a view that called ``request.websocket.send_upgrade``.
HANDLED: HttpResponse = _Handled()
