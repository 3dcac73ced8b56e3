"""``request.websocket``: the upgrade decision a view makes (Starcounter's ``SendUpgrade``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from .codes import Closing, close_for
from .conf import conf
from .exceptions import UpgradeError
from .handshake import accept_headers, check_subprotocol
from .limits import group_refusal
from .outbox import LocalSocket
from .room_table import user_room_name
from .runtime import Runtime
from .websocket import WebSocket

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

__all__ = ["WebSocketUpgrade"]


def session_cookie(session_key: str) -> str:
    """The ``Set-Cookie`` value Django's SessionMiddleware would send for ``session_key``."""
    response = HttpResponse()
    response.set_cookie(
        settings.SESSION_COOKIE_NAME,
        session_key,
        max_age=None if settings.SESSION_EXPIRE_AT_BROWSER_CLOSE else settings.SESSION_COOKIE_AGE,
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=bool(settings.SESSION_COOKIE_SECURE),
        httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )
    return response.cookies[settings.SESSION_COOKIE_NAME].output(header="").strip()


def _user_pk(user: Any) -> Any:
    """The primary key of an authenticated user (AuthenticationMiddleware's), else None."""
    return user.pk if user is not None and getattr(user, "is_authenticated", False) else None


class WebSocketUpgrade:
    """Set as ``request.websocket`` on an upgrade request; falsy attribute is None elsewhere.

    ``id`` is the ID the socket will have; ``subprotocols`` what the client offered.
    """

    def __init__(self, runtime: Runtime, sock: LocalSocket, subprotocols: Sequence[str]) -> None:
        self._runtime = runtime
        self._sock = sock
        self.subprotocols: list[str] = list(subprotocols)
        self.upgraded = False
        #: The upgrade request (set by the application): its user goes into the registry.
        self.request: HttpRequest | None = None
        #: The user of an upgrade decided by a consumer (``scope["user"]``), when there is no request.
        self.user: Any = None
        #: Set on the loop when the handshake timed out and the client was refused.
        self._expired_after: float | None = None

    @property
    def id(self) -> int:
        return self._sock.id

    def __repr__(self) -> str:
        return f"<WebSocketUpgrade id={self.id} upgraded={self.upgraded}>"

    def expire(self, after: float) -> None:
        """Called on the loop when the view took longer than ``after`` seconds: the client
        was refused, and a later ``send_upgrade()`` raises :class:`UpgradeError`."""
        self._expired_after = after

    def send_upgrade(
        self,
        group: str,
        cookies: Iterable[str] | None = None,
        headers: Mapping[str, str] | None = None,
        session: SessionBase | None = None,
        subprotocol: str | None = None,
    ) -> WebSocket:
        """Accept the upgrade into ``group`` and return the usable :class:`WebSocket`.

        The 101 carries ``cookies`` (``Set-Cookie`` values) and ``headers``; ``session``
        is attached to the socket (saved first if it has no key yet, and then its cookie
        goes on the 101). Every argument is checked before anything is sent: a second
        call raises :class:`UpgradeError`; reserved headers and CR/LF/NUL raise ValueError.
        Then return ``HANDLED`` from the view.
        """
        pairs, session_key = self._prepare(group, cookies, headers, session, subprotocol)
        if session is not None and session_key is None:
            session.save()
            session_key = session.session_key
            pairs.append((b"Set-Cookie", session_cookie(str(session_key)).encode("latin-1")))
        user = getattr(self.request, "user", None) if self.request is not None else self.user
        self._sock.user_id = _user_pk(user)
        return self._accept(group, pairs, session_key, subprotocol)

    async def asend_upgrade(
        self,
        group: str,
        cookies: Iterable[str] | None = None,
        headers: Mapping[str, str] | None = None,
        session: SessionBase | None = None,
        subprotocol: str | None = None,
    ) -> WebSocket:
        """:meth:`send_upgrade` for async views (saves a new session without blocking the loop)."""
        pairs, session_key = self._prepare(group, cookies, headers, session, subprotocol)
        if session is not None and session_key is None:
            await sync_to_async(session.save)()
            session_key = session.session_key
            pairs.append((b"Set-Cookie", session_cookie(str(session_key)).encode("latin-1")))
        auser = getattr(self.request, "auser", None)
        self._sock.user_id = _user_pk(await auser() if auser is not None else self.user)
        return self._accept(group, pairs, session_key, subprotocol)

    def _prepare(
        self,
        group: object,
        cookies: Iterable[str] | None,
        headers: Mapping[str, str] | None,
        session: Any,
        subprotocol: str | None,
    ) -> tuple[list[tuple[bytes, bytes]], str | None]:
        if self.upgraded:
            raise UpgradeError(f"send_upgrade() was already called for WebSocket {self.id}")
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty str, got {group!r}")
        pairs = accept_headers(cookies, headers)
        check_subprotocol(subprotocol, self.subprotocols)
        if session is not None and not hasattr(session, "session_key"):
            raise TypeError(f"session must be a Django session (request.session), got {type(session).__name__}")
        return pairs, (session.session_key if session is not None else None)

    def _accept(
        self, group: str, pairs: list[tuple[bytes, bytes]], session_key: str | None, subprotocol: str | None
    ) -> WebSocket:
        sock = self._sock
        runtime = self._runtime
        sock.group = group
        sock.session_key = session_key
        sock.subprotocol = subprotocol
        message: dict[str, Any] = {"type": "websocket.accept", "subprotocol": subprotocol, "headers": pairs}

        def register() -> None:
            # On the loop, so that the handshake timeout and the group count cannot race it.
            if self._expired_after is not None:
                raise UpgradeError(
                    f"WebSocket {sock.id}: the view took more than {self._expired_after:g}s "
                    "(HANDSHAKE_TIMEOUT) to upgrade; the client was refused with 503"
                )
            limit = conf.MAX_CONNECTIONS_PER_GROUP
            refusal = group_refusal(group, runtime.table.group_size(group), limit)
            self.upgraded = True
            sock.accept(message, held=True)
            runtime.add(sock)
            if sock.user_id is not None:  # in its user's room from its first frame on
                runtime.rooms.join(sock, user_room_name(sock.user_id))
            if refusal is not None:
                runtime.stats["group_full"] += 1
                runtime.log_refusal("WebSocket %s closed with 1013: %s", sock.id, refusal)
                sock.close(*close_for(Closing.GROUP_FULL, group=group, limit=limit))

        runtime.run_on_loop(register)
        return WebSocket(sock.id)
