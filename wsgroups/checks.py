"""System checks for wiring and settings mistakes; ids are stable (``wsgroups.E001`` …).

======  =====================================================================
id      problem
======  =====================================================================
E001    ``wsgroups.middleware.WebSocketMiddleware`` is not in MIDDLEWARE
E002    the channel layer named by ``WSGROUPS["CHANNEL_LAYER"]`` is not configured
E003    ``daphne`` is listed after ``django.contrib.staticfiles`` (runserver would not be daphne's)
E004    ``ASGI_APPLICATION`` is not set
E005    ``WSGROUPS`` is not a dict
E006    ``WSGROUPS`` has an unknown key
E007    a ``WSGROUPS`` value has the wrong type or range
E008    ``PROCESS_TIMEOUT`` is not longer than ``HEARTBEAT_INTERVAL``
E009    the channel layer is Channels' in-memory layer, which cannot link processes
W001    ``daphne`` is not in INSTALLED_APPS: ``runserver`` will not serve WebSockets
======  =====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import DEFAULTS

__all__ = ["check_settings", "check_wiring"]

MIDDLEWARE_PATH = "wsgroups.middleware.WebSocketMiddleware"

_POSITIVE_NUMBERS = (
    "MAX_MESSAGE_SIZE",
    "OUTGOING_BUFFER",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "HANDLER_THREADS",
    "HEARTBEAT_INTERVAL",
    "PROCESS_TIMEOUT",
    "QUERY_TIMEOUT",
    "SEND_TIMEOUT",
    "REGISTRY_INTERVAL",
    "REGISTRY_RETENTION",
    "CLOSE_TIMEOUT",
)
_NON_NEGATIVE_NUMBERS = ("SHUTDOWN_TIMEOUT",)
_HANDLER_MODES = ("inline", "worker")
_INTEGERS = ("MAX_MESSAGE_SIZE", "OUTGOING_BUFFER", "HANDLER_THREADS")


@register(Tags.compatibility)
def check_wiring(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if MIDDLEWARE_PATH not in (getattr(settings, "MIDDLEWARE", None) or []):
        errors.append(
            Error(
                f"'{MIDDLEWARE_PATH}' is missing from MIDDLEWARE.",
                hint="Add it after SessionMiddleware and AuthenticationMiddleware so request.websocket is set.",
                id="wsgroups.E001",
            )
        )
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    alias = _user_settings().get("CHANNEL_LAYER", DEFAULTS["CHANNEL_LAYER"])
    # A non-string alias is E007's to report.
    if isinstance(alias, str) and alias not in layers:
        errors.append(
            Error(
                f"CHANNEL_LAYERS has no {alias!r} layer; wsgroups links its processes through it.",
                hint="Configure channels_redis.core.RedisChannelLayer under that alias.",
                id="wsgroups.E002",
            )
        )
    elif isinstance(alias, str) and str(layers[alias].get("BACKEND", "")).endswith(".InMemoryChannelLayer"):
        errors.append(
            Error(
                f"The {alias!r} channel layer is in memory: it cannot link processes, so sockets in "
                "another server, runworker or wsbroadcast could never be reached and would look dead.",
                hint="Use channels_redis.core.RedisChannelLayer (any number of processes, one Redis).",
                id="wsgroups.E009",
            )
        )
    installed = list(settings.INSTALLED_APPS)
    if "daphne" in installed:
        if "django.contrib.staticfiles" in installed and installed.index("daphne") > installed.index(
            "django.contrib.staticfiles"
        ):
            errors.append(
                Error(
                    "'daphne' must come before 'django.contrib.staticfiles' in INSTALLED_APPS.",
                    hint="Otherwise runserver is Django's WSGI server, which cannot upgrade WebSockets.",
                    id="wsgroups.E003",
                )
            )
    else:
        errors.append(
            Warning(
                "'daphne' is not in INSTALLED_APPS, so 'manage.py runserver' will not serve WebSockets.",
                hint="Put 'daphne' first in INSTALLED_APPS, or run an ASGI server (daphne, uvicorn).",
                id="wsgroups.W001",
            )
        )
    if not getattr(settings, "ASGI_APPLICATION", None):
        errors.append(
            Error(
                "ASGI_APPLICATION is not set.",
                hint="Point it at an asgi.py that calls wsgroups.asgi.get_asgi_application().",
                id="wsgroups.E004",
            )
        )
    return errors


def _user_settings() -> dict[str, Any]:
    value = getattr(settings, "WSGROUPS", {})
    return value if isinstance(value, dict) else {}


@register(Tags.compatibility)
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, "WSGROUPS", {})
    if not isinstance(raw, dict):
        return [Error(f"WSGROUPS must be a dict, got {type(raw).__name__}.", id="wsgroups.E005")]
    errors: list[CheckMessage] = []
    for key in sorted(set(raw) - set(DEFAULTS)):
        errors.append(
            Error(
                f"WSGROUPS has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="wsgroups.E006",
            )
        )
    for key, value in raw.items():
        problem = _value_problem(key, value)
        if problem:
            errors.append(Error(f"WSGROUPS[{key!r}] {problem}, got {value!r}.", id="wsgroups.E007"))
    if not errors:
        merged = {**DEFAULTS, **raw}
        if merged["PROCESS_TIMEOUT"] <= merged["HEARTBEAT_INTERVAL"]:
            errors.append(
                Error(
                    "WSGROUPS['PROCESS_TIMEOUT'] must be longer than WSGROUPS['HEARTBEAT_INTERVAL'], "
                    "or live processes would be declared dead.",
                    hint="Keep PROCESS_TIMEOUT at least three heartbeat intervals.",
                    id="wsgroups.E008",
                )
            )
    return errors


def _value_problem(key: str, value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key in _INTEGERS and not (isinstance(value, int) and not isinstance(value, bool)):
        return "must be an integer"
    if key in _POSITIVE_NUMBERS and not (number and value > 0):
        return "must be a positive number"
    if key in _NON_NEGATIVE_NUMBERS and not (number and value >= 0):
        return "must be a number >= 0"
    if key == "ALLOWED_ORIGINS" and not (
        isinstance(value, (list, tuple)) and all(isinstance(origin, str) for origin in value)
    ):
        return "must be a list of origins such as 'https://example.com'"
    if key == "CHANNEL_LAYER" and not (isinstance(value, str) and value):
        return "must be a channel layer alias"
    if key == "HANDLER_MODE" and value not in _HANDLER_MODES:
        return f"must be one of {', '.join(map(repr, _HANDLER_MODES))}"
    return None
