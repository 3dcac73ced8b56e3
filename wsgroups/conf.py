"""wsgroups settings, declared once: each key with its default, type, range and meaning.

Projects set them in ``settings.WSGROUPS`` (a dict); every other key keeps its default.
:data:`conf` reads them lazily and caches the merged values until Django's
``setting_changed`` signal fires, so ``override_settings`` works in tests. The system
checks (``wsgroups.E005`` to ``E007``) validate the same declarations, so a bad value is a
``manage.py check`` error with an id, not a crash at first use.

This is the only module that reads ``settings.WSGROUPS`` and ``settings.CHANNEL_LAYERS``.
The table of keys is :func:`describe`'s output; the README prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from django.conf import settings as django_settings
from django.core.signals import setting_changed

__all__ = ["DEFAULTS", "OPTIONS", "Option", "Settings", "conf", "describe"]

T = TypeVar("T")


def _number(value: object) -> float | None:
    """``value`` if it is an int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def positive_int(value: object) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive integer"


def positive_number(value: object) -> str | None:
    number = _number(value)
    return None if number is not None and number > 0 else "must be a positive number"


def non_negative_number(value: object) -> str | None:
    number = _number(value)
    return None if number is not None and number >= 0 else "must be a number >= 0"


def optional_limit(value: object) -> str | None:
    return None if value is None or positive_int(value) is None else "must be a positive integer, or None for no limit"


def optional_rate(value: object) -> str | None:
    if value is None or positive_number(value) is None:
        return None
    return "must be a positive number of messages per second, or None for no limit"


def burst(value: object) -> str | None:
    number = _number(value)
    return None if number is not None and number >= 1 else "must be a number of messages >= 1"


def origins(value: object) -> str | None:
    if isinstance(value, (list, tuple)) and all(isinstance(origin, str) for origin in value):
        return None
    return "must be a list of origins such as 'https://example.com'"


def layer_alias(value: object) -> str | None:
    return None if isinstance(value, str) and value else "must be a channel layer alias"


HANDLER_MODES = ("inline", "worker")


def handler_mode(value: object) -> str | None:
    return None if value in HANDLER_MODES else f"must be one of {', '.join(map(repr, HANDLER_MODES))}"


def boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def _optional(kind: Callable[[Any], T]) -> Callable[[Any], T | None]:
    def convert(value: Any) -> T | None:
        return None if value is None else kind(value)

    return convert


@dataclass(frozen=True)
class Option(Generic[T]):
    """One key of ``WSGROUPS``: read as ``conf.KEY``, validated by :meth:`problem`."""

    default: Any
    convert: Callable[[Any], T]
    check: Callable[[object], str | None]
    doc: str
    name: str = ""

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    @overload
    def __get__(self, instance: None, owner: type) -> Option[T]: ...
    @overload
    def __get__(self, instance: Settings, owner: type) -> T: ...
    def __get__(self, instance: Settings | None, owner: type) -> Option[T] | T:
        if instance is None:
            return self
        values = instance._values
        if values is None:
            values = instance._load()
        value: T = values[self.name]
        return value

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable for this key, or None."""
        return self.check(value)


def _origins(value: Any) -> tuple[str, ...]:
    return tuple(value)


class Settings:
    """Typed, cached access to ``settings.WSGROUPS`` merged over the declared defaults."""

    MAX_MESSAGE_SIZE = Option(1024 * 1024, int, positive_int, "largest incoming message in bytes; larger → close 1009")
    MAX_CONNECTIONS = Option(
        10000,
        _optional(int),
        optional_limit,
        "sockets one server process holds at once, handshakes included; more → HTTP 503 (None: no limit)",
    )
    MAX_CONNECTIONS_PER_CLIENT = Option(
        256,
        _optional(int),
        optional_limit,
        "the same per client address (behind a proxy run the server with --proxy-headers)",
    )
    MAX_CONNECTIONS_PER_GROUP = Option(
        None,
        _optional(int),
        optional_limit,
        "sockets of one group in one server process; a socket upgraded beyond it is closed with 1013",
    )
    MESSAGE_RATE = Option(
        100.0, _optional(float), optional_rate, "messages per second one socket may send on average; faster → 1008"
    )
    MESSAGE_BURST = Option(200, float, burst, "messages one socket may send at once above that rate")
    HANDSHAKE_TIMEOUT = Option(
        10.0,
        float,
        positive_number,
        "seconds for the request head (else 408), then for the view to decide the upgrade (else 503)",
    )
    ALLOWED_ORIGINS = Option(
        (), _origins, origins, "origins allowed besides those matching ALLOWED_HOSTS; '*' allows all"
    )
    OUTGOING_BUFFER = Option(1000, int, positive_int, "frames queued per socket before it is closed with 1013")
    PING_INTERVAL = Option(20.0, float, positive_number, "seconds between keep-alive pings")
    PING_TIMEOUT = Option(30.0, float, positive_number, "seconds without a pong before the peer is dropped")
    PERMESSAGE_DEFLATE = Option(
        False,
        bool,
        boolean,
        "negotiate permessage-deflate (RFC 7692) with clients that offer it, under every server",
    )
    HANDLER_THREADS = Option(32, int, positive_int, "threads that run sync handlers")
    HANDLER_MODE = Option(
        "inline", str, handler_mode, "'inline': handlers run in the server; 'worker': in runworker wsgroups"
    )
    SHUTDOWN_TIMEOUT = Option(
        5.0,
        float,
        non_negative_number,
        "seconds a shutdown waits to read what was sent to it, then for disconnect handlers",
    )
    CLOSE_TIMEOUT = Option(
        5.0, float, positive_number, "seconds a socket closed for overflow may take before it is abandoned"
    )
    CHANNEL_LAYER = Option("default", str, layer_alias, "alias in CHANNEL_LAYERS that links the processes")
    HEARTBEAT_INTERVAL = Option(2.0, float, positive_number, "seconds between a process's heartbeats")
    PROCESS_TIMEOUT = Option(
        6.0, float, positive_number, "seconds without a heartbeat before a process is dead and its sockets reaped"
    )
    QUERY_TIMEOUT = Option(5.0, float, positive_number, "seconds to wait for another process to answer")
    SEND_TIMEOUT = Option(10.0, float, positive_number, "seconds to keep retrying a full or unreachable layer")
    REGISTRY_INTERVAL = Option(
        0.005, float, positive_number, "seconds to gather registry writes into one batch (a new 101 waits for it)"
    )
    REGISTRY_RETENTION = Option(86400, float, positive_number, "seconds closed sockets stay in the registry")

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        user = self.user_settings()
        if not isinstance(user, dict):
            user = {}  # wsgroups.E005's to report
        values = {option.name: option.convert(user.get(option.name, option.default)) for option in OPTIONS}
        self._values = values
        return values

    def reset(self) -> None:
        """Forget the cached values (on ``setting_changed``)."""
        self._values = None

    @staticmethod
    def user_settings() -> object:
        """``settings.WSGROUPS`` as the project wrote it (``{}`` when unset)."""
        return getattr(django_settings, "WSGROUPS", {})

    @staticmethod
    def channel_layers() -> dict[str, Any]:
        """``settings.CHANNEL_LAYERS`` (``{}`` when unset)."""
        layers = getattr(django_settings, "CHANNEL_LAYERS", None) or {}
        return layers if isinstance(layers, dict) else {}

    def has_channel_layer(self) -> bool:
        """Whether the layer named by ``CHANNEL_LAYER`` is configured (else: in-process only)."""
        return self.CHANNEL_LAYER in self.channel_layers()


#: Every declared key, in declaration order.
OPTIONS: tuple[Option[Any], ...] = tuple(value for value in vars(Settings).values() if isinstance(value, Option))

DEFAULTS: dict[str, Any] = {option.name: option.default for option in OPTIONS}


def describe() -> list[tuple[str, Any, str]]:
    """``(key, default, meaning)`` for every key, for documentation."""
    return [(option.name, option.default, option.doc) for option in OPTIONS]


conf = Settings()


def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("WSGROUPS", "CHANNEL_LAYERS"):
        conf.reset()


setting_changed.connect(_setting_changed)
