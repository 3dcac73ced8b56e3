from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "project.chat"
    label = "chat"
    verbose_name = "Chat demo"
    default_auto_field = "django.db.models.BigAutoField"
