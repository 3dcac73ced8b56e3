"""Upgrades beside the views: those the URLconf does not claim go to the project's Channels app.

``get_asgi_application(channels=app)`` hands :class:`~wsgroups.application.WebSocketApplication`
the project's Channels websocket application (a ``URLRouter``, usually inside
``AuthMiddlewareStack``). After the origin check and the connection limits, an upgrade
whose path the project's URLconf resolves goes to its view; any other is served here, by
that application, with the ``websocket.connect`` message already read handed back to it.

An upgrade neither side claims (``URLRouter`` finds no route) gets 404, and one whose
application fails before answering gets 500: the client always gets a response, never a
dropped connection, and the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.http import HttpResponseBase, HttpResponseNotFound, HttpResponseServerError
from django.urls import Resolver404, get_script_prefix, resolve

__all__ = ["CONSUMER_SCOPE_KEY", "path_has_view", "serve_consumer"]

logger = logging.getLogger("wsgroups")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Reject = Callable[[HttpResponseBase], Awaitable[None]]

#: Set in the scope of an upgrade handed to the Channels application, to the WebSocket
#: application that passed its origin check and limits and counts the connection
#: (:class:`~wsgroups.consumers.UpgradeConsumer` serves its socket through it).
CONSUMER_SCOPE_KEY = "wsgroups.beside_views"

#: ``websocket.*`` messages that answer the handshake.
_ANSWERS = frozenset({"websocket.accept", "websocket.close", "websocket.http.response.start"})


def path_has_view(scope: Scope) -> bool:
    """Whether the project's URLconf resolves the upgrade's path (then its view decides)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "") or "")
    if root and path.startswith(root):
        path = path[len(root) :]
    prefix = get_script_prefix().rstrip("/")
    if prefix and path.startswith(prefix):
        path = path[len(prefix) :]
    try:
        resolve(path or "/")
    except Resolver404:
        return False
    return True


async def serve_consumer(
    app: ASGIApp, scope: Scope, first: Message, receive: Receive, send: Send, reject: Reject, owner: object
) -> None:
    """Run ``app`` on an upgrade whose ``websocket.connect`` (``first``) was read already.

    ``reject`` sends an HTTP response as the answer to the upgrade: used when ``app``
    finds no route (404) or fails before answering (500). ``owner`` (the WebSocket
    application) goes into the scope under :data:`CONSUMER_SCOPE_KEY`.
    """
    replayed = False
    answered = False

    async def receive_replaying() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    async def send_watching(message: Message) -> None:
        nonlocal answered
        if message.get("type") in _ANSWERS:
            answered = True
        await send(message)

    try:
        await app({**scope, CONSUMER_SCOPE_KEY: owner}, receive_replaying, send_watching)
    except ValueError as error:
        if answered or not str(error).startswith("No route found"):
            raise
        logger.info("WebSocket upgrade to %s refused with 404: neither a view nor a consumer", scope.get("path"))
        await reject(HttpResponseNotFound("No view or consumer for this path."))
    except Exception:
        if answered:
            raise
        logger.exception("The Channels application failed on the upgrade to %s", scope.get("path"))
        await reject(HttpResponseServerError("The WebSocket application failed."))
