"""``get_asgi_application()``: HTTP to Django, WebSocket upgrades to wsgroups, lifespan handled."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from django.core.asgi import get_asgi_application as django_asgi_application
from django.core.exceptions import ImproperlyConfigured

from .checks import check_migrations, startup_errors

if TYPE_CHECKING:
    from .application import ASGIApp
    from .routing import ProtocolRouter

__all__ = ["get_asgi_application"]

logger = logging.getLogger("wsgroups")


def get_asgi_application(channels: ASGIApp | None = None) -> ProtocolRouter:
    """The project's ASGI application (set up Django first, as ``django.core.asgi`` does).

    ``channels`` is the project's Channels websocket application (a ``URLRouter``, usually
    inside ``AuthMiddlewareStack``): an upgrade whose path the URLconf does not resolve
    goes to it, after the same origin check and limits as the views' upgrades.

    Raises :class:`~django.core.exceptions.ImproperlyConfigured` listing the errors of the
    wiring and settings system checks (``wsgroups.E0xx``), so servers that run no checks
    refuse a configuration ``manage.py check`` would refuse.

    When the process runs daphne (its command line or ``runserver``), this also installs
    :mod:`wsgroups.servers.daphne`, which makes daphne send 101 headers, close reasons,
    every close code and full rejection responses; under uvicorn it installs
    :mod:`wsgroups.servers.uvicorn`, which bounds request heads in time and size; under
    hypercorn, :mod:`wsgroups.servers.hypercorn`. Each makes ``PERMESSAGE_DEFLATE`` decide
    whether permessage-deflate is negotiated.
    """
    if channels is not None and not callable(channels):
        raise ValueError(f"channels must be an ASGI application (a URLRouter, for instance), got {channels!r}")
    http = django_asgi_application()
    errors = startup_errors()
    if errors:
        # daphne and uvicorn run no system checks: refuse to serve a broken configuration.
        raise ImproperlyConfigured(
            "wsgroups cannot start:\n" + "\n".join(f"  {e.id}: {e.msg} HINT: {e.hint or '-'}" for e in errors)
        )
    for warning in check_migrations():
        logger.warning("%s: %s HINT: %s", warning.id, warning.msg, warning.hint)

    # Imported once Django is set up: the application loads the models.
    from .routing import ProtocolRouter, start_member

    if "daphne.server" in sys.modules:
        from .servers import daphne

        daphne.install(on_start=start_member)
    if "uvicorn.server" in sys.modules or "uvicorn.main" in sys.modules:
        from .servers import uvicorn

        uvicorn.install()
    if "hypercorn.config" in sys.modules:
        from .servers import hypercorn

        hypercorn.install()
    return ProtocolRouter(http, channels=channels)  # type: ignore[arg-type]  # Django's stubs type scope as dict
