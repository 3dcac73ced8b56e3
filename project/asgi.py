"""ASGI entry point: ``daphne project.asgi:application`` or ``uvicorn project.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from wsgroups.asgi import get_asgi_application

application = get_asgi_application()
