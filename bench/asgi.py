"""ASGI app of benchmark servers: WebSocket paths under ``/bare/`` to the bare consumer,
everything else to wsgroups (``/bench/ws`` and the demo's URLs)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wsgroups.asgi import get_asgi_application

wsgroups_application = get_asgi_application()

from channels.routing import URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.baseline import BareConsumer  # noqa: E402

bare_application = URLRouter([path("bare/ws", BareConsumer.as_asgi())])

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``/bare/`` WebSocket scopes to the baseline, the rest to wsgroups."""
    if scope["type"] == "websocket" and scope.get("path", "").startswith("/bare/"):
        await bare_application(scope, receive, send)
    else:
        await wsgroups_application(scope, receive, send)
