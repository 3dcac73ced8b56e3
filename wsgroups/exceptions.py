"""Exceptions raised by wsgroups.

Everything derives from :class:`WebSocketError`::

    WebSocketError
    ├── UpgradeError          misuse of request.websocket (second upgrade, HANDLED without upgrade)
    ├── HandlerError          a handler registration that cannot work
    └── TransportError        the channel layer cannot carry a message (Redis down, no answer)

Invalid arguments (a header with CR/LF, a close reason over 123 bytes, an ID out of
range) raise :class:`ValueError` or :class:`TypeError` naming the argument.
"""

from __future__ import annotations

__all__ = ["HandlerError", "TransportError", "UpgradeError", "WebSocketError"]


class WebSocketError(Exception):
    """Base class of every wsgroups exception."""


class UpgradeError(WebSocketError):
    """The upgrade API was used in a way that cannot produce a valid handshake."""


class HandlerError(WebSocketError):
    """A handler was registered in a way that cannot be dispatched."""


class TransportError(WebSocketError):
    """The channel layer could not carry a message to another process, or no answer came."""
