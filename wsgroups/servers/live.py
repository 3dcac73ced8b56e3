"""The process behind ``wsgroups_live_server``: daphne serving the project on the test databases.

:mod:`wsgroups.testing.pytest` starts :func:`serve` in a fresh interpreter (multiprocessing's
"spawn": no threads or connections inherited from the test process). This module imports
nothing of Django's at load time, since the interpreter unpickles it before Django is set up.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["serve"]


def serve(settings_module: str, databases: dict[str, str], host: str, port: int) -> None:
    """Set Django up on the databases named in ``databases`` (alias → name), then run daphne
    on ``host:port`` with the project's ``ASGI_APPLICATION`` and wsgroups' daphne adapter."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    # Django is set up here, in the new interpreter, before anything reads the database.
    import django
    from django.conf import settings

    django.setup()
    from django.db import connections

    for alias, name in databases.items():
        settings.DATABASES[alias]["NAME"] = name
        connections[alias].settings_dict["NAME"] = name
    # Imported before the application is built, so that get_asgi_application() installs the adapter.
    from daphne.server import Server
    from django.utils.module_loading import import_string

    application: Any = import_string(settings.ASGI_APPLICATION)
    Server(application, endpoints=[f"tcp:port={port}:interface={host}"], verbosity=0).run()
