"""Settings for the servers the end-to-end tests start: the demo project plus a test app."""

from __future__ import annotations

import os
import tempfile

if not any(os.environ.get(name) for name in ("REDIS_URL", "REDIS_SENTINELS", "WSGROUPS_TEST_EMBEDDED_REDIS")):
    # The test process itself: use the tests' Redis, never the demo's embedded one.
    from tests.services import redis_service

    os.environ["REDIS_URL"] = redis_service().url

from project.settings import *  # noqa: F403
from project.settings import ALLOWED_HOSTS, DATABASES, INSTALLED_APPS, WSGROUPS


def _optional_int(name: str, default: str) -> int | None:
    value = os.environ.get(name, default)
    return int(value) if value else None


INSTALLED_APPS = [*INSTALLED_APPS, "tests.wsapp"]
if str(DATABASES["default"]["ENGINE"]).endswith("sqlite3"):
    # wsgroups_live_server serves from another process, which cannot open an in-memory test database.
    _test_db = os.path.join(tempfile.gettempdir(), f"wsgroups-tests-{os.getpid()}.sqlite3")
    DATABASES["default"]["TEST"] = {"NAME": _test_db}
# A server started on another loopback address answers to it (start_server(host=...)).
ALLOWED_HOSTS = [*ALLOWED_HOSTS, *(h for h in os.environ.get("WSGROUPS_TEST_EXTRA_HOSTS", "").split(",") if h)]
ROOT_URLCONF = "tests.wsapp.urls"
WSGROUPS = {
    **WSGROUPS,
    "MAX_MESSAGE_SIZE": int(os.environ.get("WSGROUPS_TEST_MAX_MESSAGE_SIZE", str(64 * 1024))),
    "ALLOWED_ORIGINS": ["http://allowed.example"],
    "PING_INTERVAL": float(os.environ.get("WSGROUPS_TEST_PING_INTERVAL", "20")),
    "PING_TIMEOUT": float(os.environ.get("WSGROUPS_TEST_PING_TIMEOUT", "30")),
    "OUTGOING_BUFFER": int(os.environ.get("WSGROUPS_TEST_OUTGOING_BUFFER", "1000")),
    "SHUTDOWN_TIMEOUT": float(os.environ.get("WSGROUPS_TEST_SHUTDOWN_TIMEOUT", "5")),
    "CLOSE_TIMEOUT": float(os.environ.get("WSGROUPS_TEST_CLOSE_TIMEOUT", "5")),
    "HEARTBEAT_INTERVAL": float(os.environ.get("WSGROUPS_TEST_HEARTBEAT_INTERVAL", "1")),
    "PROCESS_TIMEOUT": float(os.environ.get("WSGROUPS_TEST_PROCESS_TIMEOUT", "4")),
    "SEND_TIMEOUT": float(os.environ.get("WSGROUPS_TEST_SEND_TIMEOUT", "10")),
    "HANDLER_MODE": os.environ.get("WSGROUPS_TEST_HANDLER_MODE", "inline"),
    # The shared servers take bursts from one address; the limit tests start their own.
    "MAX_CONNECTIONS": _optional_int("WSGROUPS_TEST_MAX_CONNECTIONS", "10000"),
    "MAX_CONNECTIONS_PER_CLIENT": _optional_int("WSGROUPS_TEST_MAX_CONNECTIONS_PER_CLIENT", ""),
    "MAX_CONNECTIONS_PER_GROUP": _optional_int("WSGROUPS_TEST_MAX_CONNECTIONS_PER_GROUP", ""),
    "MESSAGE_RATE": float(os.environ.get("WSGROUPS_TEST_MESSAGE_RATE", "10000")),
    "MESSAGE_BURST": float(os.environ.get("WSGROUPS_TEST_MESSAGE_BURST", "20000")),
    "HANDSHAKE_TIMEOUT": float(os.environ.get("WSGROUPS_TEST_HANDSHAKE_TIMEOUT", "10")),
    "PERMESSAGE_DEFLATE": os.environ.get("WSGROUPS_TEST_PERMESSAGE_DEFLATE", "") == "1",
}
LOGIN_URL = "/accounts/login/"
if os.environ.get("WSGROUPS_TEST_ASGI_APPLICATION"):
    ASGI_APPLICATION = os.environ["WSGROUPS_TEST_ASGI_APPLICATION"]
if os.environ.get("WSGROUPS_TEST_IN_MEMORY_LAYER"):
    # A misconfiguration every process must refuse (wsgroups.E009).
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
