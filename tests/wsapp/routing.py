"""The Channels websocket routes of the test app (``tests/asgi.py`` puts them beside the views)."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("consumer/stock", consumers.StockConsumer.as_asgi()),
    path("consumer/upgrade", consumers.EchoUpgrade.as_asgi()),
    path("consumer/sync-upgrade", consumers.SyncEchoUpgrade.as_asgi()),
]
