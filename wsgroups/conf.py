"""wsgroups settings, read lazily from ``settings.WSGROUPS`` so ``override_settings`` works.

================================  ==========  ==========================================================
key                               default     meaning
================================  ==========  ==========================================================
``MAX_MESSAGE_SIZE``              1048576     largest incoming message in bytes; larger → close 1009
``MAX_CONNECTIONS``               10000       sockets one server process holds at once, handshakes
                                              in progress included; more → HTTP 503 (None: no limit)
``MAX_CONNECTIONS_PER_CLIENT``    256         the same per client address (``scope["client"]``;
                                              behind a proxy run the server with ``--proxy-headers``)
``MAX_CONNECTIONS_PER_GROUP``     None        sockets of one group in one server process; a socket
                                              upgraded beyond it is closed with 1013 at once
``MESSAGE_RATE``                  100.0       messages per second one socket may send on average;
                                              faster → close 1008 (None: no limit)
``MESSAGE_BURST``                 200         messages one socket may send at once above that rate
``HANDSHAKE_TIMEOUT``             10.0        seconds a connection may take to send its request
                                              head (else 408), and then the view to decide on
                                              the upgrade (else 503)
``ALLOWED_ORIGINS``               ``[]``      origins allowed besides those matching ALLOWED_HOSTS,
                                              e.g. ``"https://app.example.com"``; ``"*"`` allows all
``OUTGOING_BUFFER``               1000        frames queued per socket before it is closed with 1013
``PING_INTERVAL``                 20.0        seconds between keep-alive pings (daphne adapter)
``PING_TIMEOUT``                  30.0        seconds without a pong before the peer is dropped
``HANDLER_THREADS``               32          threads that run sync handlers
``HANDLER_MODE``                  "inline"    "inline": handlers run in the server process;
                                              "worker": in ``manage.py runworker wsgroups``
``SHUTDOWN_TIMEOUT``              5.0         seconds to wait for disconnect handlers at shutdown
``CLOSE_TIMEOUT``                 5.0         seconds a socket closed for overflow may take to go
                                              before it is abandoned (its handler runs regardless)
``CHANNEL_LAYER``                 "default"   alias in CHANNEL_LAYERS that links the processes
``HEARTBEAT_INTERVAL``            2.0         seconds between a process's heartbeats
``PROCESS_TIMEOUT``               6.0         seconds without a heartbeat before a process is dead
                                              and its sockets are reaped (within this + interval)
``QUERY_TIMEOUT``                 5.0         seconds to wait for another process to answer
``SEND_TIMEOUT``                  10.0        seconds to keep retrying a full or unreachable layer
``REGISTRY_INTERVAL``             0.005       seconds to gather registry writes into one batch (a new
                                              socket's 101 waits for its row to be written)
``REGISTRY_RETENTION``            86400       seconds closed sockets stay in the registry
================================  ==========  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings as django_settings

__all__ = ["DEFAULTS", "conf"]

T = TypeVar("T")

DEFAULTS: dict[str, Any] = {
    "MAX_MESSAGE_SIZE": 1024 * 1024,
    "MAX_CONNECTIONS": 10000,
    "MAX_CONNECTIONS_PER_CLIENT": 256,
    "MAX_CONNECTIONS_PER_GROUP": None,
    "MESSAGE_RATE": 100.0,
    "MESSAGE_BURST": 200,
    "HANDSHAKE_TIMEOUT": 10.0,
    "ALLOWED_ORIGINS": [],
    "OUTGOING_BUFFER": 1000,
    "PING_INTERVAL": 20.0,
    "PING_TIMEOUT": 30.0,
    "HANDLER_THREADS": 32,
    "HANDLER_MODE": "inline",
    "SHUTDOWN_TIMEOUT": 5.0,
    "CLOSE_TIMEOUT": 5.0,
    "CHANNEL_LAYER": "default",
    "HEARTBEAT_INTERVAL": 2.0,
    "PROCESS_TIMEOUT": 6.0,
    "QUERY_TIMEOUT": 5.0,
    "SEND_TIMEOUT": 10.0,
    "REGISTRY_INTERVAL": 0.005,
    "REGISTRY_RETENTION": 86400,
}


class Settings:
    """Typed attribute access to the WSGROUPS setting merged over :data:`DEFAULTS`."""

    def _get(self, name: str) -> Any:
        value = getattr(django_settings, "WSGROUPS", {})
        user = value if isinstance(value, dict) else {}
        return user.get(name, DEFAULTS[name])

    def _optional(self, name: str, kind: Callable[[Any], T]) -> T | None:
        """A limit that None switches off."""
        value = self._get(name)
        return None if value is None else kind(value)

    @property
    def MAX_MESSAGE_SIZE(self) -> int:
        return int(self._get("MAX_MESSAGE_SIZE"))

    @property
    def MAX_CONNECTIONS(self) -> int | None:
        return self._optional("MAX_CONNECTIONS", int)

    @property
    def MAX_CONNECTIONS_PER_CLIENT(self) -> int | None:
        return self._optional("MAX_CONNECTIONS_PER_CLIENT", int)

    @property
    def MAX_CONNECTIONS_PER_GROUP(self) -> int | None:
        return self._optional("MAX_CONNECTIONS_PER_GROUP", int)

    @property
    def MESSAGE_RATE(self) -> float | None:
        return self._optional("MESSAGE_RATE", float)

    @property
    def MESSAGE_BURST(self) -> float:
        return float(self._get("MESSAGE_BURST"))

    @property
    def HANDSHAKE_TIMEOUT(self) -> float:
        return float(self._get("HANDSHAKE_TIMEOUT"))

    @property
    def ALLOWED_ORIGINS(self) -> list[str]:
        return list(self._get("ALLOWED_ORIGINS"))

    @property
    def OUTGOING_BUFFER(self) -> int:
        return int(self._get("OUTGOING_BUFFER"))

    @property
    def PING_INTERVAL(self) -> float:
        return float(self._get("PING_INTERVAL"))

    @property
    def PING_TIMEOUT(self) -> float:
        return float(self._get("PING_TIMEOUT"))

    @property
    def HANDLER_THREADS(self) -> int:
        return int(self._get("HANDLER_THREADS"))

    @property
    def HANDLER_MODE(self) -> str:
        return str(self._get("HANDLER_MODE"))

    @property
    def SHUTDOWN_TIMEOUT(self) -> float:
        return float(self._get("SHUTDOWN_TIMEOUT"))

    @property
    def CLOSE_TIMEOUT(self) -> float:
        return float(self._get("CLOSE_TIMEOUT"))

    @property
    def CHANNEL_LAYER(self) -> str:
        return str(self._get("CHANNEL_LAYER"))

    @property
    def HEARTBEAT_INTERVAL(self) -> float:
        return float(self._get("HEARTBEAT_INTERVAL"))

    @property
    def PROCESS_TIMEOUT(self) -> float:
        return float(self._get("PROCESS_TIMEOUT"))

    @property
    def QUERY_TIMEOUT(self) -> float:
        return float(self._get("QUERY_TIMEOUT"))

    @property
    def SEND_TIMEOUT(self) -> float:
        return float(self._get("SEND_TIMEOUT"))

    @property
    def REGISTRY_INTERVAL(self) -> float:
        return float(self._get("REGISTRY_INTERVAL"))

    @property
    def REGISTRY_RETENTION(self) -> float:
        return float(self._get("REGISTRY_RETENTION"))


conf = Settings()
