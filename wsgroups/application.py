"""The ASGI application for WebSocket scopes: Django decides the upgrade, then frames go to handlers.

One instance serves every socket of the process. Per socket it:

1. refuses a cross-origin upgrade with 403 (before any view runs), and one over the
   connection limits with 503; with a Channels application beside the views, hands an
   upgrade the URLconf does not resolve to it (:mod:`wsgroups.consumer_routing`);
2. allocates the socket's ID and runs the request through the project's URLconf and
   HTTP middleware, with ``request.websocket`` set;
3. sends the view's response as the rejection unless the view called ``send_upgrade``;
4. reads frames one at a time and awaits each handler before reading the next, which
   gives per-socket arrival order and back-pressure on the client;
5. runs the group's disconnect handler exactly once, however the socket ended, and then
   takes the socket out of its rooms.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import (
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    HttpResponseForbidden,
    HttpResponseServerError,
)
from django.urls import set_script_prefix

from .codes import ABNORMAL_CLOSURE, NO_STATUS_RECEIVED, CloseCode, Closing, close_for
from .conf import conf
from .consumer_routing import path_has_view, serve_consumer
from .dispatch import dispatch, handler_socket, run_disconnect
from .handled import HANDLED
from .handlers import handle
from .handshake import django_allowed_hosts, origin_allowed, rejection_headers
from .limits import MessageRate
from .membership import join
from .middleware import UPGRADE_ATTRIBUTE
from .outbox import LocalSocket, SocketState
from .runtime import Runtime, get_runtime
from .shutdown import install_signal_handlers
from .upgrade import WebSocketUpgrade

__all__ = [
    "SOCKET_ID_EXTENSION",
    "ASGIApp",
    "Receive",
    "Scope",
    "Send",
    "WebSocketApplication",
    "announce_socket_id",
    "unavailable",
]

logger = logging.getLogger("wsgroups")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RESPONSE_EXTENSION = "websocket.http.response"
#: A scope extension whose dict gets the socket's ID (``"id"``) once it is allocated:
#: how :mod:`wsgroups.testing` learns it.
SOCKET_ID_EXTENSION = "wsgroups.socket_id"


def announce_socket_id(scope: Scope, socket_id: int) -> None:
    """Tell whoever asked through :data:`SOCKET_ID_EXTENSION` the ID of the scope's socket."""
    holder = (scope.get("extensions") or {}).get(SOCKET_ID_EXTENSION)
    if isinstance(holder, dict):
        holder["id"] = socket_id


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def unavailable(message: str) -> HttpResponse:
    """A 503 refusal with ``Retry-After``."""
    response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = "5"
    return response


def _log_late_decision(decision: asyncio.Future[Any]) -> None:
    """The view of an upgrade refused for taking too long has finished; report a failure."""
    if not decision.cancelled() and decision.exception() is not None:
        logger.error("The view of a timed-out WebSocket upgrade failed", exc_info=decision.exception())


class UpgradeHandler(BaseHandler):
    """Runs an upgrade request through the project's middleware and view, like any request.

    The whole request runs in one worker thread (the sync middleware chain, as under
    WSGI): one thread hop per upgrade instead of one per sync middleware.
    """

    def __init__(self) -> None:
        super().__init__()
        self.load_middleware(is_async=False)

    def get_upgrade_response(self, scope: Scope, upgrade: WebSocketUpgrade) -> tuple[HttpResponseBase, bytes]:
        """The view's response and, for a rejection, its body (the response is then closed)."""
        http_scope = {**scope, "type": "http", "method": "GET"}
        set_script_prefix(get_script_prefix(http_scope))
        signals.request_started.send(sender=self.__class__, scope=http_scope)
        try:
            request = ASGIRequest(http_scope, io.BytesIO())
        except UnicodeDecodeError:
            logger.warning("Bad Request (UnicodeDecodeError) on a WebSocket upgrade", exc_info=True)
            response: HttpResponseBase = HttpResponseBadRequest()
        else:
            upgrade.request = request
            setattr(request, UPGRADE_ATTRIBUTE, upgrade)
            try:
                response = self.get_response(request)
            finally:
                # Break the request <-> upgrade cycle at once: left to the garbage collector,
                # every socket's request would linger in memory for a while.
                upgrade.request = None
        if upgrade.upgraded:
            signals.request_finished.send(sender=self.__class__)
            return response, b""
        if response is HANDLED:
            logger.error("The view for %s returned HANDLED without calling send_upgrade()", scope.get("path"))
            response = HttpResponseServerError("The view returned HANDLED without upgrading.")
        try:
            if getattr(response, "streaming", False):
                body = b"".join(bytes(chunk) for chunk in response)
            else:
                body = bytes(getattr(response, "content", b""))
        finally:
            response.close()  # sends request_finished
        return response, body


class WebSocketApplication:
    """ASGI app for ``websocket`` scopes (``get_asgi_application`` routes them here).

    With ``channels`` (the project's Channels websocket application), an upgrade whose path
    the URLconf does not resolve goes to it once the origin check and the limits passed.
    """

    def __init__(self, channels: ASGIApp | None = None) -> None:
        self.django = UpgradeHandler()
        self.channels = channels
        self._warned_no_response_extension = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = get_runtime()
        install_signal_handlers(runtime)
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        can_respond = RESPONSE_EXTENSION in (scope.get("extensions") or {})
        if runtime.shutting_down:
            runtime.stats["shutdown_refused"] += 1
            await self.send_rejection(send, unavailable("Server is shutting down."), None, can_respond)
            return
        origin = _header(scope, b"origin")
        allowed_hosts = django_allowed_hosts(settings.ALLOWED_HOSTS, settings.DEBUG)
        if not origin_allowed(origin, allowed_hosts, conf.ALLOWED_ORIGINS):
            runtime.stats["origin_refused"] += 1
            runtime.log_refusal("WebSocket upgrade to %s refused: origin %r is not allowed", scope.get("path"), origin)
            await self.send_rejection(send, HttpResponseForbidden("Origin not allowed."), None, can_respond)
            return
        client = scope.get("client") or ("", 0)
        address = str(client[0] or "")
        refusal = runtime.connections.refusal(address, conf.MAX_CONNECTIONS, conf.MAX_CONNECTIONS_PER_CLIENT)
        if refusal is not None:
            runtime.stats["refused_at_limit"] += 1
            runtime.log_refusal("WebSocket upgrade to %s refused with 503: %s", scope.get("path"), refusal)
            await self.send_rejection(send, unavailable(f"Too many connections: {refusal}."), None, can_respond)
            return
        runtime.connections.add(address)
        try:
            if self.channels is not None and not path_has_view(scope):

                async def reject(response: HttpResponseBase) -> None:
                    await self.send_rejection(send, response, None, can_respond)

                await serve_consumer(self.channels, scope, message, receive, send, reject, self)
            else:
                await self.upgrade_and_serve(runtime, scope, receive, send, address, can_respond)
        finally:
            runtime.connections.discard(address)

    async def upgrade_and_serve(
        self, runtime: Runtime, scope: Scope, receive: Receive, send: Send, address: str, can_respond: bool
    ) -> None:
        """Let the project's view decide within HANDSHAKE_TIMEOUT, then serve the socket."""
        # Decided in a coroutine of its own, so that nothing of the decision (the upgrade,
        # the view's future, the response) stays in memory while the socket is served.
        sock = await self.decide(runtime, scope, send, address, can_respond)
        if sock is not None:
            await self.serve(runtime, sock, receive)

    async def decide(
        self, runtime: Runtime, scope: Scope, send: Send, address: str, can_respond: bool
    ) -> LocalSocket | None:
        """Run the upgrade request through the project's view: the socket it accepted, or
        None once the client got the view's rejection (or a 503 for a slow view)."""
        await join(runtime)
        sock = await runtime.new_socket(scope.get("path", ""), send, address)
        announce_socket_id(scope, sock.id)
        upgrade = WebSocketUpgrade(runtime, sock, scope.get("subprotocols") or ())
        timeout = conf.HANDSHAKE_TIMEOUT
        decision = asyncio.ensure_future(
            sync_to_async(self.django.get_upgrade_response, thread_sensitive=False, executor=runtime.upgrade_executor)(
                scope, upgrade
            )
        )
        done, _ = await asyncio.wait({decision}, timeout=timeout)
        if not done and not upgrade.upgraded:
            # The view's thread cannot be stopped; a late send_upgrade() raises UpgradeError.
            upgrade.expire(timeout)
            decision.add_done_callback(_log_late_decision)
            runtime.stats["handshake_timeouts"] += 1
            runtime.log_refusal(
                "WebSocket upgrade to %s refused with 503: the view took more than %.1fs to decide",
                scope.get("path"),
                timeout,
            )
            await self.send_rejection(send, unavailable("The upgrade took too long."), None, can_respond)
            return None
        response, body = await decision  # upgraded: the view may still be finishing its work
        if not upgrade.upgraded:
            runtime.stats["view_rejected"] += 1
            await self.send_rejection(send, response, body, can_respond)
            return None
        if response is not HANDLED:
            logger.error(
                "The view for %s called send_upgrade() but returned %r instead of HANDLED; closing WebSocket %s",
                scope.get("path"),
                response,
                sock.id,
            )
            sock.close(*close_for(Closing.UPGRADE_RESPONSE))
        return sock

    async def send_rejection(
        self, send: Send, response: HttpResponseBase, body: bytes | None, can_respond: bool
    ) -> None:
        """Send ``response`` (whose ``body`` was read already, or None for a plain response)
        as the answer to the upgrade request."""
        if body is None:
            body = bytes(getattr(response, "content", b""))
        if can_respond:
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": response.status_code,
                    "headers": rejection_headers(response.items(), response.cookies.values(), len(body)),
                    # Not in the ASGI spec (it has no reason phrase); the daphne adapter uses it.
                    "reason": response.reason_phrase,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        if not self._warned_no_response_extension:
            self._warned_no_response_extension = True
            logger.warning(
                "This ASGI server cannot send HTTP responses to WebSocket upgrades; "
                "rejections go out as 403. Use daphne with wsgroups.asgi, uvicorn or hypercorn."
            )
        await send({"type": "websocket.close"})

    async def serve(self, runtime: Runtime, sock: LocalSocket, receive: Receive) -> None:
        """Feed frames to the group's handlers until the socket ends, then run its disconnect handler."""
        max_size = conf.MAX_MESSAGE_SIZE
        stats = runtime.stats
        clock = runtime.loop.time
        rate = conf.MESSAGE_RATE
        bucket = MessageRate(rate, conf.MESSAGE_BURST, clock()) if rate is not None else None
        table = runtime.table
        sock.app_task = asyncio.current_task()
        try:
            while True:
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if sock.abandoned:
                        break
                    raise
                kind = message["type"]
                if kind == "websocket.disconnect":
                    if sock.close_code is None:
                        # A close frame without a code is 1005 (RFC 6455 7.1.5); daphne reports none.
                        sock.close_code = message.get("code") or NO_STATUS_RECEIVED
                        sock.close_reason = message.get("reason") or ""
                    break
                if kind != "websocket.receive" or sock.state is not SocketState.OPEN:
                    continue
                stats["frames_in"] += 1
                if bucket is not None and not bucket.allow(clock()):
                    stats["rate_limited"] += 1
                    runtime.log_refusal(
                        "WebSocket %s closed with 1008: more than %g messages per second", sock.id, rate
                    )
                    sock.close(*close_for(Closing.RATE_LIMITED, rate=rate))
                    continue
                text = message.get("text")
                payload: str | bytes
                if text is not None:
                    payload, is_text = text, True
                    # A character is 1-4 UTF-8 bytes: encode only when the length is ambiguous.
                    size = len(text) if len(text) * 4 <= max_size else len(text.encode("utf-8"))
                else:
                    payload, is_text = message.get("bytes") or b"", False
                    size = len(payload)
                if size > max_size:
                    sock.close(*close_for(Closing.MESSAGE_TOO_BIG, size=size, limit=max_size))
                    continue
                kind_name = "text" if is_text else "binary"
                handler = handle.resolve(sock.group, is_text).handler
                if handler is None:
                    sock.close(*close_for(Closing.MISSING_HANDLER, group=sock.group, kind=kind_name))
                    continue
                table.touch_session(sock)
                ws = handler_socket(sock.id, sock.group, sock.session_key)
                if not await dispatch(runtime, handler, kind_name, ws, payload):
                    sock.close(*close_for(Closing.HANDLER_ERROR))
        finally:
            if sock.state is SocketState.OPEN:  # cancelled (server stopping without our signal handler)
                sock.close_code = sock.close_code or CloseCode.GOING_AWAY
            sock.state = SocketState.CLOSED
            runtime.remove(sock)
            runtime.count_close(sock.close_code if sock.close_code is not None else ABNORMAL_CLOSURE)
            try:
                if not sock.reaped:
                    await run_disconnect(runtime, sock.id, sock.group, sock.session_key)
            finally:
                runtime.rooms.forget(sock.id)  # after the handler, which may still list its rooms
                sock.closed.set()
