"""wsgroups settings, read lazily from ``settings.WSGROUPS`` so ``override_settings`` works.

=========================  ==========  ===================================================
key                        default     meaning
=========================  ==========  ===================================================
``MAX_MESSAGE_SIZE``       1048576     largest incoming message in bytes; larger → close 1009
``ALLOWED_ORIGINS``        ``[]``      origins allowed besides those matching ALLOWED_HOSTS,
                                       e.g. ``"https://app.example.com"``; ``"*"`` allows all
``OUTGOING_BUFFER``        1000        frames queued per socket before it is closed with 1013
``PING_INTERVAL``          20.0        seconds between keep-alive pings (daphne adapter)
``PING_TIMEOUT``           30.0        seconds without a pong before the peer is dropped
``HANDLER_THREADS``        32          threads that run sync handlers
``SHUTDOWN_TIMEOUT``       5.0         seconds to wait for disconnect handlers at shutdown
``CLOSE_TIMEOUT``          10.0        seconds to wait for a closing peer before giving up
``CHANNEL_LAYER``          "default"   alias in CHANNEL_LAYERS that links the processes
=========================  ==========  ===================================================
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

__all__ = ["DEFAULTS", "conf"]

DEFAULTS: dict[str, Any] = {
    "MAX_MESSAGE_SIZE": 1024 * 1024,
    "ALLOWED_ORIGINS": [],
    "OUTGOING_BUFFER": 1000,
    "PING_INTERVAL": 20.0,
    "PING_TIMEOUT": 30.0,
    "HANDLER_THREADS": 32,
    "SHUTDOWN_TIMEOUT": 5.0,
    "CLOSE_TIMEOUT": 10.0,
    "CHANNEL_LAYER": "default",
}


class Settings:
    """Attribute access to the WSGROUPS setting merged over :data:`DEFAULTS`."""

    def _user(self) -> dict[str, Any]:
        value = getattr(django_settings, "WSGROUPS", {})
        return value if isinstance(value, dict) else {}

    @property
    def MAX_MESSAGE_SIZE(self) -> int:
        return int(self._user().get("MAX_MESSAGE_SIZE", DEFAULTS["MAX_MESSAGE_SIZE"]))

    @property
    def ALLOWED_ORIGINS(self) -> list[str]:
        return list(self._user().get("ALLOWED_ORIGINS", DEFAULTS["ALLOWED_ORIGINS"]))

    @property
    def OUTGOING_BUFFER(self) -> int:
        return int(self._user().get("OUTGOING_BUFFER", DEFAULTS["OUTGOING_BUFFER"]))

    @property
    def PING_INTERVAL(self) -> float:
        return float(self._user().get("PING_INTERVAL", DEFAULTS["PING_INTERVAL"]))

    @property
    def PING_TIMEOUT(self) -> float:
        return float(self._user().get("PING_TIMEOUT", DEFAULTS["PING_TIMEOUT"]))

    @property
    def HANDLER_THREADS(self) -> int:
        return int(self._user().get("HANDLER_THREADS", DEFAULTS["HANDLER_THREADS"]))

    @property
    def SHUTDOWN_TIMEOUT(self) -> float:
        return float(self._user().get("SHUTDOWN_TIMEOUT", DEFAULTS["SHUTDOWN_TIMEOUT"]))

    @property
    def CLOSE_TIMEOUT(self) -> float:
        return float(self._user().get("CLOSE_TIMEOUT", DEFAULTS["CLOSE_TIMEOUT"]))

    @property
    def CHANNEL_LAYER(self) -> str:
        return str(self._user().get("CHANNEL_LAYER", DEFAULTS["CHANNEL_LAYER"]))


conf = Settings()
