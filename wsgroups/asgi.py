"""``get_asgi_application()``: HTTP to Django, WebSocket upgrades to wsgroups, lifespan handled."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from django.core.asgi import get_asgi_application as django_asgi_application
from django.core.checks import CheckMessage
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from .checks import check_migrations, startup_errors
from .servers import granian

if TYPE_CHECKING:
    from .application import ASGIApp
    from .routing import ProtocolRouter

__all__ = ["get_asgi_application"]

logger = logging.getLogger("wsgroups")


def _outside_event_loop(check: Callable[[], list[CheckMessage]]) -> list[CheckMessage]:
    """Run a check that queries the database, in a thread of its own when an event loop is
    running here: ``uvicorn --workers N`` and gunicorn's uvicorn worker load the application
    from their event loop, where Django refuses database queries."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return check()

    def check_and_close() -> list[CheckMessage]:
        try:
            return check()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1, thread_name_prefix="wsgroups-checks") as pool:
        return pool.submit(check_and_close).result()


def get_asgi_application(channels: ASGIApp | None = None) -> ProtocolRouter:
    """The project's ASGI application (set up Django first, as ``django.core.asgi`` does).

    ``channels`` is the project's Channels websocket application (a ``URLRouter``, usually
    inside ``AuthMiddlewareStack``): an upgrade whose path the URLconf does not resolve
    goes to it, after the same origin check and limits as the views' upgrades.

    Raises :class:`~django.core.exceptions.ImproperlyConfigured` listing the errors of the
    wiring and settings system checks (``wsgroups.E0xx``), so servers that run no checks
    refuse a configuration ``manage.py check`` would refuse; and under granian, which
    cannot carry the model (see :mod:`wsgroups.servers.granian`).

    When the process runs daphne (its command line or ``runserver``), this also installs
    :mod:`wsgroups.servers.daphne`, which makes daphne send 101 headers, close reasons,
    every close code and full rejection responses; under uvicorn it installs
    :mod:`wsgroups.servers.uvicorn`, which bounds request heads in time and size; under
    hypercorn, :mod:`wsgroups.servers.hypercorn`. Each makes ``PERMESSAGE_DEFLATE`` decide
    whether permessage-deflate is negotiated; hypercorn's also passes a client's close code
    and reason on.
    """
    if channels is not None and not callable(channels):
        raise ValueError(f"channels must be an ASGI application (a URLRouter, for instance), got {channels!r}")
    granian.refuse_if_running()
    http = django_asgi_application()
    errors = startup_errors()
    if errors:
        # daphne and uvicorn run no system checks: refuse to serve a broken configuration.
        raise ImproperlyConfigured(
            "wsgroups cannot start:\n" + "\n".join(f"  {e.id}: {e.msg} HINT: {e.hint or '-'}" for e in errors)
        )
    for warning in _outside_event_loop(check_migrations):
        logger.warning("%s: %s HINT: %s", warning.id, warning.msg, warning.hint)

    # Imported once Django is set up: the application loads the models.
    from .routing import ProtocolRouter, start_member

    if "daphne.server" in sys.modules:
        from .servers import daphne

        daphne.install(on_start=start_member)
    if "uvicorn.server" in sys.modules or "uvicorn.main" in sys.modules:
        from .servers import uvicorn

        uvicorn.install()
    if any(name.startswith("hypercorn.") for name in sys.modules):
        from .servers import hypercorn

        hypercorn.install()
    return ProtocolRouter(http, channels=channels)  # type: ignore[arg-type]  # Django's stubs type scope as dict
