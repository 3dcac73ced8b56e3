from django.apps import AppConfig


class WsappConfig(AppConfig):
    name = "tests.wsapp"
    label = "wsapp"
