"""The hypercorn adapter: a client's close code and reason reach the application, and
``PERMESSAGE_DEFLATE`` decides compression.

Close codes: hypercorn answers a client's close frame with the same code and reason, but
then tells the ASGI application only that the stream ended, as ``websocket.disconnect``
with 1006 (abnormal closure), as if the TCP connection had dropped; a close frame
hypercorn sends on its own (1009 for an oversized message) is reported the same way. The
registry would record every client's close as a dropped connection. :func:`install`
makes hypercorn's WebSocket stream remember the first close frame its protocol sends (the
answer to the client's, or its own) and put that frame's code and reason into the
``websocket.disconnect`` it would have reported as 1006. A close the application asked
for, and a connection that really dropped, are reported unchanged.

Compression: hypercorn (0.17, 0.18) accepts every permessage-deflate offer, with no
option to turn it off: its handshake answers the client's ``Sec-WebSocket-Extensions``
with wsproto's ``PerMessageDeflate``. :func:`install` wraps that answer so that, with the
setting off, the offer is ignored (no extension is negotiated and frames go
uncompressed), and with it on, hypercorn's own negotiation runs unchanged.

:func:`wsgroups.asgi.get_asgi_application` calls :func:`install` when the process runs
hypercorn.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..conf import conf

__all__ = ["install"]

HANDSHAKE_MODULE = "hypercorn.protocol.ws_stream"

Put = Callable[[dict[str, Any]], Awaitable[None]]


def _disconnect_with_close_frame(stream: Any, put: Put) -> Put:
    async def put_with_close_frame(message: dict[str, Any]) -> None:
        close = stream.__dict__.get("_wsgroups_close_frame")
        if message.get("type") == "websocket.disconnect" and message.get("code") == 1006 and close is not None:
            message = {**message, "code": close[0], "reason": close[1]}
        await put(message)

    return put_with_close_frame


def _adapt(cls: Any) -> None:
    """Make the stream class ``cls`` report the close frame it sent in place of 1006."""
    if getattr(cls, "_wsgroups_adapted", False):
        return
    close_connection = importlib.import_module("wsproto.events").CloseConnection
    send_event = cls._send_wsproto_event

    async def send_event_remembering_close(self: Any, event: Any) -> None:
        if isinstance(event, close_connection) and "_wsgroups_close_frame" not in self.__dict__:
            # wsproto answers a close frame without a code with one of code 1005 (sent without it).
            self.__dict__["_wsgroups_close_frame"] = (int(event.code), event.reason or "")
        await send_event(self, event)

    def get_app_put(self: Any) -> Put | None:
        put: Put | None = self.__dict__.get("_wsgroups_app_put")
        return put

    def set_app_put(self: Any, put: Put | None) -> None:
        self.__dict__["_wsgroups_app_put"] = None if put is None else _disconnect_with_close_frame(self, put)

    cls._send_wsproto_event = send_event_remembering_close
    cls.app_put = property(get_app_put, set_app_put)
    cls._wsgroups_adapted = True


def _apply_compression_setting(cls: Any) -> None:
    """Make ``cls.accept`` (hypercorn's handshake answer) drop the client's extension offers
    while ``PERMESSAGE_DEFLATE`` is off."""
    if getattr(cls, "_wsgroups_adapted", False):
        return
    accept = cls.accept

    @functools.wraps(accept)
    def accept_as_configured(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not conf.PERMESSAGE_DEFLATE:
            self.extensions = None  # as if the client had offered none
        return accept(self, *args, **kwargs)

    cls.accept = accept_as_configured
    cls._wsgroups_adapted = True


def install() -> None:
    """Adapt hypercorn's WebSocket stream (HTTP/1.1 upgrades and HTTP/2 extended CONNECT)
    and its handshake."""
    try:
        module = importlib.import_module(HANDSHAKE_MODULE)
    except ImportError:  # no hypercorn here: nothing to adapt
        return
    _adapt(module.WSStream)
    _apply_compression_setting(module.Handshake)
