"""App config: imports every installed app's ``sockets.py``, registers the system checks, and
sets up the clean stop under ``runserver`` and the early join of ``runworker``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from . import checks  # noqa: F401 - registers the checks
from .layers import install_layer_tuning


class WsgroupsConfig(AppConfig):
    name = "wsgroups"
    verbose_name = "WebSockets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        install_layer_tuning()
        autodiscover_modules("sockets")
        # Imported once the apps are ready: they reach the runtime, and so the models.
        from . import runserver, worker

        runserver.install()
        worker.install()
