"""The test project's application with Channels consumers beside the views (``channels=``)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup(set_prefix=False)  # the routes below import the auth models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402

from tests.wsapp.routing import websocket_urlpatterns  # noqa: E402
from wsgroups.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application(channels=AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
