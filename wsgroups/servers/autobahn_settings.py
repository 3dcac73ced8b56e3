"""Two per-connection costs of autobahn (daphne's WebSocket implementation), removed.

autobahn formats every new connection's 40 settings for a debug line (``pprint.pformat``,
a tenth of the event loop's time when sockets churn) even when that line is not logged:
:func:`defer_debug_formatting` makes that formatting happen only if it is. And it copies
those settings onto each connection unless the protocol class has them, which
:func:`share_settings` sees to (1.8 kB less per socket).
"""

from __future__ import annotations

import inspect
import pprint
from typing import Any

from autobahn.websocket import protocol as autobahn_protocol

__all__ = ["DeferredFormat", "defer_debug_formatting", "share_settings"]


def share_settings(cls: Any, factory: Any) -> None:
    """Make ``factory``'s settings attributes of the protocol class ``cls``.

    autobahn copies the factory's 40 settings onto every connection unless the protocol
    already has them (1.8 kB per socket); as class attributes they cost nothing per socket.
    ``cls._settings_from`` remembers the factory they came from.
    """
    if getattr(cls, "_settings_from", None) is not factory:
        for name in cls.CONFIG_ATTRS:
            value = getattr(factory, name)
            # A function (perMessageCompressionAccept) must not become a method.
            setattr(cls, name, staticmethod(value) if inspect.isfunction(value) else value)
        cls._settings_from = factory


class DeferredFormat:
    """``pprint.pformat(value)``, computed only when a log line formats it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _timings_str(timings: Any) -> str:
    return pprint.pformat(timings._timings)


def defer_debug_formatting() -> None:
    """Make autobahn's protocol module format its debug values only when they are logged."""
    # Its debug lines are the only callers of pformat there but Timings' __str__, which
    # must return a str: it gets pprint's own.
    autobahn_protocol.pformat = DeferredFormat  # type: ignore[assignment,attr-defined]
    autobahn_protocol.Timings.__str__ = _timings_str  # type: ignore[method-assign]
