"""The project's ASGI application: routes each scope by type.

``http`` goes to Django, ``websocket`` to :class:`~wsgroups.application.WebSocketApplication`,
``lifespan`` is answered here (its startup makes the process a member of the cluster,
its shutdown closes this process's sockets like SIGTERM does), and the ``wsgroups``
channel of ``manage.py runworker wsgroups`` runs the handler calls servers send in
worker mode. :func:`wsgroups.asgi.get_asgi_application` builds it.
"""

from __future__ import annotations

import logging

from .application import ASGIApp, Receive, Scope, Send, WebSocketApplication
from .membership import join
from .ops import BATCH_TYPE
from .runtime import current_runtime, get_runtime
from .servers.granian import REFUSAL, running_under_granian
from .shutdown import install_signal_handlers, shutdown
from .transport import WORKER_CHANNEL

__all__ = ["ProtocolRouter", "serve_worker", "start_member"]

logger = logging.getLogger("wsgroups")


async def start_member(kind: str = "server") -> None:
    """Make this server (or ``runworker wsgroups``) process a member of the cluster as it
    starts, not at its first socket or message: an idle process heartbeats and reaps dead
    peers too."""
    runtime = get_runtime()
    install_signal_handlers(runtime)
    try:
        await join(runtime, kind=kind)
    except Exception:
        # The next socket (or message) tries again; until then this process is not a member.
        logger.exception("wsgroups: could not join the cluster at startup")


class ProtocolRouter:
    """Route by scope type: ``http`` to Django, ``websocket`` to wsgroups, ``lifespan`` answered here."""

    #: What the system checks look for (through any ASGI middleware) to know the project routes
    #: WebSocket scopes to wsgroups.
    routes_websockets_to_wsgroups = True

    def __init__(self, http: ASGIApp, websocket: ASGIApp | None = None, channels: ASGIApp | None = None) -> None:
        self.http = http
        self.websocket = websocket if websocket is not None else WebSocketApplication(channels)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        elif kind == "channel" and scope.get("channel") == WORKER_CHANNEL:
            await serve_worker(receive)
        else:
            raise ValueError(f"wsgroups cannot serve ASGI scope type {kind!r}")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Answer startup at once (refuse it under granian); at shutdown close this process's
        sockets like SIGTERM does."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if running_under_granian():
                    # get_asgi_application() refused already; a router built by hand refuses here.
                    await send({"type": "lifespan.startup.failed", "message": REFUSAL})
                    return
                await start_member()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                runtime = current_runtime()
                if runtime is not None:
                    await shutdown(runtime)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def serve_worker(receive: Receive) -> None:
    """``manage.py runworker wsgroups``: run the handler calls servers send in worker mode."""
    runtime = get_runtime()
    await join(runtime, kind="worker")
    if runtime.transport is None:
        raise RuntimeError("runworker wsgroups needs a channel layer (CHANNEL_LAYERS)")
    while True:
        message = await receive()
        if message.get("type") == BATCH_TYPE:
            await runtime.transport.receive_message(dict(message))
