"""The public socket API: :class:`WebSocket`, :class:`Group`, :func:`active_websocket`, ``HANDLED``."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from http.cookies import Morsel, SimpleCookie
from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpResponse
from django.http.response import ResponseHeaders

from .codes import CloseCode, ConnectionFlags
from .handshake import check_close
from .ids import validate_id
from .runtime import LocalSocket, Runtime, current_runtime

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

__all__ = ["HANDLED", "Group", "WebSocket", "active_websocket", "frame_message"]

_current: contextvars.ContextVar[WebSocket | None] = contextvars.ContextVar("wsgroups_current", default=None)


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


def _flags(flags: object) -> ConnectionFlags:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"flags must be ConnectionFlags, got {flags!r}")
    return ConnectionFlags(flags)


class _Current:
    """``WebSocket.current``: the socket whose handler is running, else None."""

    def __get__(self, instance: object, owner: type) -> WebSocket | None:
        return _current.get()


class WebSocket:
    """A socket, addressed by its ID. Cheap to create; holds no connection itself.

    ``WebSocket(id)`` restores a socket from an ID stored earlier (in the database,
    a session, a message); every method is a no-op reported by its return value when
    the socket is gone.
    """

    __slots__ = ("_id", "_session")

    current = _Current()

    def __init__(self, id: int | str) -> None:
        self._id = validate_id(id, "id")
        self._session: SessionBase | None = None

    @property
    def id(self) -> int:
        return self._id

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

    # --- sending ----------------------------------------------------------------

    def send(
        self,
        data: str | bytes,
        is_text: bool | None = None,
        flags: ConnectionFlags = ConnectionFlags.NO_SPECIAL_FLAGS,
    ) -> bool:
        """Queue a frame; True if the socket took it, False if it is dead.

        Frames from one sender arrive in the order they were sent.
        """
        message = frame_message(data, is_text)
        flags = _flags(flags)
        sock = self._local()
        if sock is None:
            return False
        if flags & ConnectionFlags.DISCONNECT_IMMEDIATELY:
            return sock.submit_close(CloseCode.NORMAL, "")
        sent = sock.submit(message)
        if sent and flags & ConnectionFlags.DISCONNECT_AFTER_SEND:
            sock.submit_close(CloseCode.NORMAL, "")
        return sent

    async def asend(
        self,
        data: str | bytes,
        is_text: bool | None = None,
        flags: ConnectionFlags = ConnectionFlags.NO_SPECIAL_FLAGS,
    ) -> bool:
        """Async :meth:`send`."""
        return self.send(data, is_text, flags)

    def disconnect(self, message: str | None = None, code: int = CloseCode.NORMAL) -> bool:
        """Close with ``code`` and reason ``message`` (≤ 123 UTF-8 bytes); False if already dead."""
        code, reason = check_close(code, message)
        sock = self._local()
        return sock.submit_close(code, reason) if sock is not None else False

    async def adisconnect(self, message: str | None = None, code: int = CloseCode.NORMAL) -> bool:
        """Async :meth:`disconnect`."""
        return self.disconnect(message, code)

    def is_dead(self) -> bool:
        """True once the socket is closed (or closing) or the ID names no socket."""
        sock = self._local()
        return sock is None or not sock.is_open

    async def ais_dead(self) -> bool:
        """Async :meth:`is_dead`."""
        return self.is_dead()

    # --- attributes ---------------------------------------------------------------

    @property
    def group(self) -> str | None:
        """The group given to ``send_upgrade``, or None for a dead socket."""
        sock = self._local()
        return sock.group if sock is not None else None

    @property
    def session(self) -> SessionBase | None:
        """The session attached at upgrade (a fresh ``SessionStore`` for its key), or None."""
        if self._session is None:
            sock = self._local()
            if sock is None or not sock.session_key:
                return None
            engine = import_module(settings.SESSION_ENGINE)
            self._session = engine.SessionStore(sock.session_key)
        return self._session


class Group:
    """All sockets upgraded into one group name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty group name, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"<Group {self.name!r}>"

    def _members(self, runtime: Runtime) -> list[LocalSocket]:
        return [sock for sock in runtime.groups.get(self.name, {}).values() if sock.is_open]

    def broadcast(self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None) -> int:
        """Send ``data`` to every live socket of the group but ``exclude``; return how many took it."""
        message = frame_message(data, is_text)
        excluded = {int(ws) for ws in exclude}
        runtime = current_runtime()
        if runtime is None:
            return 0

        def run() -> int:
            count = 0
            for sock in self._members(runtime):
                if sock.id not in excluded:
                    sock.push(message)
                    count += 1
            return count

        return runtime.call(run)

    async def abroadcast(
        self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None
    ) -> int:
        """Async :meth:`broadcast`."""
        return self.broadcast(data, exclude, is_text)

    def disconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Close every live socket of the group; return how many were closed."""
        code, reason = check_close(code, message)
        runtime = current_runtime()
        if runtime is None:
            return 0

        def run() -> int:
            members = self._members(runtime)
            for sock in members:
                sock.close(code, reason)
            return len(members)

        return runtime.call(run)

    async def adisconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Async :meth:`disconnect`."""
        return self.disconnect(message, code)

    def sockets(self) -> list[WebSocket]:
        """The live sockets of the group."""
        runtime = current_runtime()
        if runtime is None:
            return []
        return runtime.call(lambda: [WebSocket(sock.id) for sock in self._members(runtime)])

    async def asockets(self) -> list[WebSocket]:
        """Async :meth:`sockets`."""
        return self.sockets()


def active_websocket(session: SessionBase | None) -> WebSocket | None:
    """The session's most recently active live WebSocket, or None."""
    key = getattr(session, "session_key", None)
    runtime = current_runtime()
    if not key or runtime is None:
        return None
    socket_id = runtime.session_sockets.get(key)
    if socket_id is None:
        return None
    ws = WebSocket(socket_id)
    return None if ws.is_dead() else ws


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
