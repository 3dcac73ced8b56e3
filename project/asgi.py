"""ASGI entry point: ``daphne project.asgi:application`` or ``uvicorn project.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from wsgroups.asgi import get_asgi_application

# The demo serves the admin's static files itself (a real deployment puts them behind a web
# server or WhiteNoise); WebSocket and lifespan scopes pass straight through.
application = ASGIStaticFilesHandler(get_asgi_application())
