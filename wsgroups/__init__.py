"""wsgroups: Starcounter-style WebSockets for Django on Channels.

Upgrade inside an ordinary view, named groups with text/binary/disconnect handlers,
64-bit socket IDs that any process can use to send, disconnect or check a socket, and
rooms that sockets join and leave while they live.

The names below load on first use, so importing the package (as Django does for
INSTALLED_APPS) loads neither the models nor the runtime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codes import CloseCode, ConnectionFlags
    from .group import Group
    from .handled import HANDLED
    from .handlers import handle
    from .room import Room
    from .websocket import WebSocket, active_websocket

__all__ = ["HANDLED", "CloseCode", "ConnectionFlags", "Group", "Room", "WebSocket", "active_websocket", "handle"]

_HOMES = {
    "HANDLED": "handled",
    "CloseCode": "codes",
    "ConnectionFlags": "codes",
    "Group": "group",
    "Room": "room",
    "WebSocket": "websocket",
    "active_websocket": "websocket",
    "handle": "handlers",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'wsgroups' has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
