"""wsgroups: Starcounter-style WebSockets for Django on Channels.

Upgrade inside an ordinary view, named groups with text/binary/disconnect handlers,
and 64-bit socket IDs that any process can use to send, disconnect or check a socket.
"""

from __future__ import annotations

from .codes import CloseCode, ConnectionFlags
from .handlers import handle
from .websocket import HANDLED, Group, WebSocket, active_websocket

__all__ = ["HANDLED", "CloseCode", "ConnectionFlags", "Group", "WebSocket", "active_websocket", "handle"]
