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
E009    the channel layer is Channels' in-memory layer, which cannot link processes (outside test runs)
E010    ``channels`` is not in INSTALLED_APPS (no ``runworker``, no layer settings)
E011    ``ASGI_APPLICATION`` cannot be imported
W001    ``daphne`` is not in INSTALLED_APPS: ``runserver`` will not serve WebSockets
W002    ``ASGI_APPLICATION`` does not route WebSocket scopes to wsgroups
W003    ``MESSAGE_BURST`` is below one second of ``MESSAGE_RATE``
W004    ``MAX_CONNECTIONS_PER_CLIENT`` or ``_PER_GROUP`` exceeds ``MAX_CONNECTIONS``
W005    wsgroups' migrations are not applied (``manage.py migrate``): every upgrade would fail
W006    a group has a disconnect handler but no text or binary handler: its frames close 1003
W007    a ``sockets.py`` next to the settings module, outside any installed app, is never imported

The wiring and settings checks also run when :func:`wsgroups.asgi.get_asgi_application`
builds the application, so ``daphne`` and ``uvicorn`` (which run no system checks)
refuse to start with the same errors.
======  =====================================================================
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import mail
from django.core.checks import ERROR, CheckMessage, Error, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils.module_loading import import_string

from .conf import DEFAULTS, OPTIONS, conf
from .handlers import HandlerRegistry, handle

__all__ = [
    "check_asgi_application",
    "check_handlers",
    "check_migrations",
    "check_settings",
    "check_wiring",
    "routes_to_wsgroups",
    "startup_errors",
]

MIDDLEWARE_PATH = "wsgroups.middleware.WebSocketMiddleware"


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
    layers = conf.channel_layers()
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
    elif (
        isinstance(alias, str)
        and str(layers[alias].get("BACKEND", "")).endswith(".InMemoryChannelLayer")
        and not in_test_run()
    ):
        errors.append(
            Error(
                f"The {alias!r} channel layer is in memory: it cannot link processes, so sockets in "
                "another server, runworker or wsbroadcast could never be reached and would look dead.",
                hint="Use channels_redis.core.RedisChannelLayer (any number of processes, one Redis).",
                id="wsgroups.E009",
            )
        )
    installed = list(settings.INSTALLED_APPS)
    if "channels" not in installed and not any(app.startswith("channels.") for app in installed):
        errors.append(
            Error(
                "'channels' is missing from INSTALLED_APPS.",
                hint="Add 'channels': 'manage.py runworker wsgroups' and the channel layer settings come from it.",
                id="wsgroups.E010",
            )
        )
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


@register(Tags.compatibility)
def check_asgi_application(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``ASGI_APPLICATION`` imports and, through any wrappers, reaches wsgroups' router."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path or not isinstance(path, str):
        return []  # E004's to report
    try:
        application = import_string(path)
    except Exception as exc:
        return [
            Error(
                f"ASGI_APPLICATION {path!r} cannot be imported: {type(exc).__name__}: {exc}",
                hint=_asgi_hint(path),
                id="wsgroups.E011",
            )
        ]
    if not routes_to_wsgroups(application):
        return [
            Warning(
                f"ASGI_APPLICATION {path!r} does not route WebSocket scopes to wsgroups, so no "
                "upgrade reaches request.websocket.",
                hint="Build it with wsgroups.asgi.get_asgi_application() (wrapping it in ASGI middleware is fine).",
                id="wsgroups.W002",
            )
        ]
    return []


def _asgi_hint(path: str) -> str:
    """Where the project's application probably is: next to its settings module."""
    module = path.rpartition(".")[0] or path
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    package = settings_module.rpartition(".")[0]
    hint = f"Tried to import module {module!r}."
    if package:
        hint += f" Settings are {settings_module!r}, so it is probably {package + '.asgi.application'!r}."
    return hint + " Point ASGI_APPLICATION at the application object of your asgi.py."


def in_test_run() -> bool:
    """Whether Django's test environment is set up (its runner, or pytest-django): there the
    in-memory layer is fine, since :mod:`wsgroups.testing` keeps every socket in-process."""
    return hasattr(mail, "outbox")


def routes_to_wsgroups(application: object, depth: int = 8) -> bool:
    """Whether ``application`` is wsgroups' router, or wraps it in attributes such as ``app``,
    ``application`` or ``inner`` (ASGI middleware, ``ASGIStaticFilesHandler``)."""
    for _ in range(depth):
        if getattr(type(application), "routes_websockets_to_wsgroups", False) is True:
            return True
        inner = next(
            (getattr(application, name) for name in _WRAPPED_ATTRIBUTES if getattr(application, name, None)),
            None,
        )
        if inner is None or inner is application:
            return False
        application = inner
    return False


_WRAPPED_ATTRIBUTES = ("application", "app", "inner")


def startup_errors() -> list[CheckMessage]:
    """The errors of the wiring and settings checks, minus SILENCED_SYSTEM_CHECKS."""
    silenced = set(getattr(settings, "SILENCED_SYSTEM_CHECKS", ()) or ())
    return [
        message
        for message in [*check_wiring(), *check_settings()]
        if message.level >= ERROR and message.id not in silenced
    ]


def _user_settings() -> dict[str, Any]:
    value = conf.user_settings()
    return value if isinstance(value, dict) else {}


@register(Tags.compatibility)
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    raw = conf.user_settings()
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
    for option in OPTIONS:
        if option.name in raw:
            value = raw[option.name]
            problem = option.problem(value)
            if problem:
                errors.append(Error(f"WSGROUPS[{option.name!r}] {problem}, got {value!r}.", id="wsgroups.E007"))
    if not errors:
        errors.extend(_relation_problems({**DEFAULTS, **raw}))
    return errors


def _relation_problems(merged: dict[str, Any]) -> list[CheckMessage]:
    """Settings that are each valid but contradict one another."""
    errors: list[CheckMessage] = []
    if merged["PROCESS_TIMEOUT"] <= merged["HEARTBEAT_INTERVAL"]:
        errors.append(
            Error(
                "WSGROUPS['PROCESS_TIMEOUT'] must be longer than WSGROUPS['HEARTBEAT_INTERVAL'], "
                "or live processes would be declared dead.",
                hint="Keep PROCESS_TIMEOUT at least three heartbeat intervals.",
                id="wsgroups.E008",
            )
        )
    total = merged["MAX_CONNECTIONS"]
    for key in ("MAX_CONNECTIONS_PER_CLIENT", "MAX_CONNECTIONS_PER_GROUP"):
        if total is not None and merged[key] is not None and merged[key] > total:
            errors.append(
                Warning(
                    f"WSGROUPS[{key!r}] ({merged[key]}) exceeds WSGROUPS['MAX_CONNECTIONS'] ({total}), "
                    "so it can never be reached.",
                    hint=f"Lower {key}, raise MAX_CONNECTIONS, or set {key} to None.",
                    id="wsgroups.W004",
                )
            )
    rate = merged["MESSAGE_RATE"]
    if rate is not None and merged["MESSAGE_BURST"] < rate:
        errors.append(
            Warning(
                f"WSGROUPS['MESSAGE_BURST'] ({merged['MESSAGE_BURST']}) is below one second of "
                f"WSGROUPS['MESSAGE_RATE'] ({rate}/s): a client that sends a second's worth of "
                "messages at once is closed with 1008.",
                hint="Set MESSAGE_BURST to at least MESSAGE_RATE.",
                id="wsgroups.W003",
            )
        )
    return errors


@register(Tags.compatibility)
def check_migrations(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """wsgroups' tables exist: its migrations are applied to the default database."""
    if sys.argv[1:2] == ["migrate"]:
        return []  # the command that applies them
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes("wsgroups"))
    except DatabaseError:
        return []  # a database that cannot be reached is Django's own error to report
    missing = [migration for migration, _ in plan if migration.app_label == "wsgroups"]
    if not missing:
        return []
    return [
        Warning(
            f"wsgroups has {len(missing)} unapplied migration(s): its tables (processes, the socket "
            "registry) are missing, so every WebSocket upgrade would fail with a server error.",
            hint="Run 'python manage.py migrate'.",
            id="wsgroups.W005",
        )
    ]


@register(Tags.compatibility)
def check_handlers(
    app_configs: Sequence[AppConfig] | None = None, registry: HandlerRegistry = handle, **kwargs: Any
) -> list[CheckMessage]:
    """Handler registrations that cannot work as meant."""
    messages: list[CheckMessage] = []
    for group, handlers in sorted(registry.groups.items()):
        if handlers.disconnect is not None and handlers.text is None and handlers.binary is None:
            messages.append(
                Warning(
                    f"Group {group!r} has a disconnect handler but no text or binary handler, so "
                    "every frame its sockets send closes them with 1003.",
                    hint="Register a handler with @handle.websocket(group), or check the group name.",
                    id="wsgroups.W006",
                )
            )
    messages.extend(_stray_sockets_modules())
    return messages


def _stray_sockets_modules() -> list[CheckMessage]:
    """A ``sockets.py`` beside the settings module, when that package is no installed app."""
    package = os.environ.get("DJANGO_SETTINGS_MODULE", "").rpartition(".")[0]
    if not package or any(app.name == package for app in apps.get_app_configs()):
        return []
    try:
        found = importlib.util.find_spec(f"{package}.sockets") is not None
    except (ImportError, ValueError):
        return []
    if not found:
        return []
    return [
        Warning(
            f"{package}.sockets is not in an installed app, so its handlers are never registered "
            "(wsgroups imports the sockets.py module of each app in INSTALLED_APPS).",
            hint=f"Move it into an app ('python manage.py startapp'), or add {package!r} to INSTALLED_APPS.",
            id="wsgroups.W007",
        )
    ]
