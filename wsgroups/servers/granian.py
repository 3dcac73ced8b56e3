"""granian cannot carry the WebSocket model: wsgroups refuses to start under it.

granian (2.x) answers ``websocket.accept`` with a 101 that carries none of the message's
headers, so the cookies, headers and session cookie a view passes to ``send_upgrade()``
never reach the client. Sockets that half work would lose what applications send them
without a word, so
:func:`wsgroups.asgi.get_asgi_application` calls :func:`refuse_if_running`, which raises
``ImproperlyConfigured`` in a process that runs granian; granian then stops (its worker
cannot load the application) and prints why.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

__all__ = ["REFUSAL", "refuse_if_running", "running_under_granian"]

REFUSAL = (
    "wsgroups cannot run under granian: granian's 101 response drops the headers of "
    "websocket.accept, so the cookies, headers and session a view passes to send_upgrade() "
    "would never reach the client. Serve the project with daphne, uvicorn (also with "
    "--workers or under gunicorn) or hypercorn."
)


def running_under_granian(modules: Mapping[str, object] = sys.modules) -> bool:
    """This process runs granian's server (which imports its Rust core before it loads the application)."""
    return "granian._granian" in modules


def refuse_if_running(modules: Mapping[str, object] = sys.modules) -> None:
    """Raise ``ImproperlyConfigured`` (saying why) in a process that runs granian."""
    if running_under_granian(modules):
        raise ImproperlyConfigured(REFUSAL)
