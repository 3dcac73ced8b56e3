"""``UpgradeConsumer``: the upgrade decided in a Channels consumer instead of a view.

Routed by the project's ``URLRouter`` like any consumer (``get_asgi_application(channels=...)``
hands it the upgrades the URLconf does not claim), it gets in ``connect()`` the same
``self.websocket`` a view gets as ``request.websocket``, and either upgrades with
``send_upgrade`` / ``asend_upgrade`` or refuses with ``reject(response)``. Once upgraded,
the socket is served by :class:`~wsgroups.application.WebSocketApplication` like a view's:
frames go to the group's handlers, its ID works from any process, it is in the registry
and reaped if its process dies. ``SyncUpgradeConsumer`` is the same for a sync ``connect()``.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponseBase, HttpResponseForbidden

from .application import Receive, Scope, Send, WebSocketApplication, announce_socket_id, unavailable
from .codes import Closing, close_for
from .conf import conf
from .consumer_routing import CONSUMER_SCOPE_KEY
from .exceptions import UpgradeError
from .membership import join
from .runtime import get_runtime
from .upgrade import WebSocketUpgrade

__all__ = ["SyncUpgradeConsumer", "UpgradeConsumer"]

logger = logging.getLogger("wsgroups")

_NOT_SERVED_BY_WSGROUPS = (
    "{name} must be served by wsgroups: route it in the Channels application given to "
    "wsgroups.asgi.get_asgi_application(channels=...)."
)


class _Upgrading(AsyncConsumer):  # type: ignore[misc]  # channels is untyped
    """What both consumers share: the socket, the decision within HANDSHAKE_TIMEOUT, serving."""

    websocket: WebSocketUpgrade
    scope: Scope
    _rejection: HttpResponseBase | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        owner = scope.get(CONSUMER_SCOPE_KEY)
        if not isinstance(owner, WebSocketApplication):
            raise ImproperlyConfigured(_NOT_SERVED_BY_WSGROUPS.format(name=type(self).__name__))
        message = await receive()
        if message.get("type") != "websocket.connect":
            return
        can_respond = "websocket.http.response" in (scope.get("extensions") or {})
        runtime = get_runtime()
        await join(runtime)
        client = scope.get("client") or ("", 0)
        sock = await runtime.new_socket(str(scope.get("path", "")), send, str(client[0] or ""))
        announce_socket_id(scope, sock.id)
        self.websocket = upgrade = WebSocketUpgrade(runtime, sock, scope.get("subprotocols") or ())
        upgrade.user = scope.get("user")
        timeout = conf.HANDSHAKE_TIMEOUT
        try:
            await asyncio.wait_for(self._decide(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            if not upgrade.upgraded:
                upgrade.expire(timeout)
                runtime.stats["handshake_timeouts"] += 1
                runtime.log_refusal(
                    "WebSocket upgrade to %s refused with 503: the consumer took more than %.1fs to decide",
                    scope.get("path"),
                    timeout,
                )
                await owner.send_rejection(send, unavailable("The upgrade took too long."), None, can_respond)
                return
        except Exception:
            if not upgrade.upgraded:
                raise  # the client gets a 500 (wsgroups.consumer_routing)
            logger.exception("%s.connect() failed after upgrading WebSocket %s", type(self).__name__, sock.id)
            sock.close(*close_for(Closing.HANDLER_ERROR))
        if not upgrade.upgraded:
            runtime.stats["view_rejected"] += 1  # the consumer's decision, as a view's
            response = self._rejection
            if response is None:
                logger.warning("%s.connect() neither upgraded nor rejected: refused with 403", type(self).__name__)
                response = HttpResponseForbidden("The upgrade was not accepted.")
            await owner.send_rejection(send, response, None, can_respond)
            return
        await owner.serve(runtime, sock, receive)

    async def _decide(self) -> None:
        raise NotImplementedError

    def _refuse(self, response: HttpResponseBase) -> None:
        if not isinstance(response, HttpResponseBase):
            raise TypeError(f"response must be a Django HttpResponse, got {type(response).__name__}")
        if self.websocket.upgraded:
            raise UpgradeError(f"WebSocket {self.websocket.id} was upgraded already; it cannot be rejected")
        if self._rejection is not None:
            raise UpgradeError(f"WebSocket upgrade {self.websocket.id} was rejected already")
        self._rejection = response


class UpgradeConsumer(_Upgrading):
    """A consumer whose ``async def connect()`` decides the upgrade with ``self.websocket``.

    ``self.websocket`` is what a view gets as ``request.websocket``; ``await
    self.reject(response)`` refuses the upgrade with that whole response (status,
    headers, cookies, body). A ``connect()`` that does neither refuses it with 403.
    """

    async def connect(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define async def connect()")

    async def reject(self, response: HttpResponseBase) -> None:
        """Refuse the upgrade: the client gets ``response`` once ``connect()`` returns."""
        self._refuse(response)

    async def _decide(self) -> None:
        await self.connect()


class SyncUpgradeConsumer(_Upgrading):
    """:class:`UpgradeConsumer` with a sync ``def connect()``, run in a thread (ORM-safe);
    it upgrades with ``self.websocket.send_upgrade(...)`` and refuses with ``self.reject(response)``."""

    def connect(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define def connect()")

    def reject(self, response: HttpResponseBase) -> None:
        """Refuse the upgrade: the client gets ``response`` once ``connect()`` returns."""
        self._refuse(response)

    async def _decide(self) -> None:
        runtime = get_runtime()
        await sync_to_async(self.connect, thread_sensitive=False, executor=runtime.upgrade_executor)()
