"""``get_asgi_application()``: HTTP to Django, WebSocket upgrades to wsgroups, lifespan handled."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .transport import WORKER_CHANNEL

__all__ = ["get_asgi_application"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ProtocolRouter:
    """Route by scope type: ``http`` to Django, ``websocket`` to wsgroups, ``lifespan`` answered here."""

    def __init__(self, http: ASGIApp, websocket: ASGIApp) -> None:
        self.http = http
        self.websocket = websocket

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
        """Answer startup at once; at shutdown close this process's sockets like SIGTERM does."""
        from .runtime import current_runtime

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                runtime = current_runtime()
                if runtime is not None:
                    await runtime.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def serve_worker(receive: Receive) -> None:
    """``manage.py runworker wsgroups``: run the handler calls servers send in worker mode."""
    from .runtime import get_runtime

    runtime = get_runtime()
    await runtime.start(kind="worker")
    if runtime.transport is None:
        raise RuntimeError("runworker wsgroups needs a channel layer (CHANNEL_LAYERS)")
    while True:
        message = await receive()
        if message.get("type") == "wsgroups.ops":
            await runtime.transport.apply(message.get("ops") or [], message.get("reply_to") or "")


def get_asgi_application() -> ProtocolRouter:
    """The project's ASGI application (set up Django first, as ``django.core.asgi`` does).

    Raises :class:`~django.core.exceptions.ImproperlyConfigured` listing the errors of the
    wiring and settings system checks (``wsgroups.E0xx``), so servers that run no checks
    refuse a configuration ``manage.py check`` would refuse.

    When the process runs daphne (its command line or ``runserver``), this also installs
    :mod:`wsgroups.servers.daphne`, which makes daphne send 101 headers, close reasons,
    every close code and full rejection responses; under uvicorn it installs
    :mod:`wsgroups.servers.uvicorn`, which bounds request heads in time and size.
    """
    from django.core.asgi import get_asgi_application as django_asgi_application

    http = django_asgi_application()

    from .checks import startup_errors

    errors = startup_errors()
    if errors:
        # daphne and uvicorn run no system checks: refuse to serve a broken configuration.
        raise ImproperlyConfigured(
            "wsgroups cannot start:\n" + "\n".join(f"  {e.id}: {e.msg} HINT: {e.hint or '-'}" for e in errors)
        )

    from .connection import WebSocketApplication

    if "daphne.server" in sys.modules:
        from .servers import daphne

        daphne.install()
    if "uvicorn.server" in sys.modules or "uvicorn.main" in sys.modules:
        from .servers import uvicorn

        uvicorn.install()
    return ProtocolRouter(http, WebSocketApplication())  # type: ignore[arg-type]  # Django's stubs type scope as dict
