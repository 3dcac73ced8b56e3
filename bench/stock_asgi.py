"""ASGI app of the stock baseline's servers: the bare consumer under Channels alone.

The benchmark compares wsgroups with what a Channels project runs without it, so the bare
consumer (:mod:`bench.baseline`) is served by a server process that never loads wsgroups'
ASGI application, and so never installs its server adapters (which change daphne and
uvicorn for every connection they serve: see :mod:`wsgroups.servers`).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.baseline import BareConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_application, "websocket": URLRouter([path("bare/ws", BareConsumer.as_asgi())])}
)
