"""The uvicorn adapter: a deadline and a size bound for the request head.

uvicorn starts its keep-alive timer only after a first response, so a client that sends
a request head a byte at a time (slowloris) holds a connection for ever; and its
httptools parser takes request heads of any size. The ASGI application sees neither:
it is called once the head is complete. :func:`install` wraps the connection setup and
data handling of uvicorn's HTTP protocols so that a connection whose first request head
is not complete within ``HANDSHAKE_TIMEOUT`` gets ``408 Request Timeout``, and one whose
head grows past :data:`MAX_REQUEST_HEAD` bytes gets ``431``; it also adapts uvicorn's
WebSocket protocol (see :func:`_adapt_websocket_protocol`), and makes ``PERMESSAGE_DEFLATE``
decide compression in place of ``--ws-per-message-deflate`` (see
:func:`_apply_compression_setting`). Everything else (frames, pings, ``--ws-max-size``) is
uvicorn's own.

:func:`wsgroups.asgi.get_asgi_application` calls :func:`install` when the process runs
uvicorn.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from typing import Any

from ..conf import conf
from ..handshake import WEBSOCKET_VERSION, head_refusal
from .queues import Flag, ReceiveQueue

__all__ = ["MAX_REQUEST_HEAD", "install"]

logger = logging.getLogger("wsgroups.uvicorn")

#: Largest request line plus headers accepted, in bytes (twice nginx's default buffers).
MAX_REQUEST_HEAD = 32 * 1024

_PROTOCOL_MODULES = (
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
    ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
)
#: uvicorn's WebSocket implementations (``--ws``).
_WEBSOCKET_MODULES = (
    ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol"),
    ("uvicorn.protocols.websockets.websockets_impl", "WebSocketProtocol"),
    ("uvicorn.protocols.websockets.wsproto_impl", "WSProtocol"),
)


def _head_pending(protocol: Any) -> bool:
    """The connection is still HTTP and between requests: a request head may be arriving."""
    transport = getattr(protocol, "transport", None)
    if transport is None or transport.is_closing() or transport.get_protocol() is not protocol:
        return False
    cycle = getattr(protocol, "cycle", None)
    return cycle is None or bool(cycle.response_complete)


def _refuse(protocol: Any, status: int) -> None:
    logger.debug("Connection from %s refused with %d", getattr(protocol, "client", None), status)
    protocol.transport.write(head_refusal(status))
    protocol.transport.close()


def _arm(protocol: Any) -> None:
    protocol._wsgroups_head_bytes = 0
    protocol._wsgroups_head_tail = b""
    protocol._wsgroups_head_done = False
    protocol._wsgroups_deadline = protocol.loop.call_later(conf.HANDSHAKE_TIMEOUT, _head_deadline, protocol)


def _count_head(protocol: Any, data: bytes) -> int:
    """How many bytes of ``data`` belong to the request head: all of them until the blank
    line that ends it (possibly split across reads); none of the body read with it."""
    tail: bytes = protocol._wsgroups_head_tail
    joined = tail + data
    end = joined.find(b"\r\n\r\n")
    if end < 0:
        protocol._wsgroups_head_tail = joined[-3:]
        return len(data)
    protocol._wsgroups_head_done = True
    return max(0, end + 4 - len(tail))


def _head_deadline(protocol: Any) -> None:
    protocol._wsgroups_deadline = None
    if _head_pending(protocol):
        _refuse(protocol, 408)


def _adapt(cls: Any) -> None:
    if getattr(cls, "_wsgroups_adapted", False):
        return
    connection_made = cls.connection_made
    data_received = cls.data_received
    connection_lost = cls.connection_lost

    def connection_made_with_deadline(self: Any, transport: Any) -> None:
        connection_made(self, transport)
        _arm(self)

    def data_received_bounded(self: Any, data: bytes) -> None:
        if _head_pending(self):
            if getattr(self, "_wsgroups_deadline", None) is None:
                _arm(self)  # the first bytes of the next request on a kept-alive connection
            if not self._wsgroups_head_done:
                self._wsgroups_head_bytes += _count_head(self, data)
            if self._wsgroups_head_bytes > MAX_REQUEST_HEAD:
                _refuse(self, 431)
                return
        data_received(self, data)
        deadline = getattr(self, "_wsgroups_deadline", None)
        if deadline is not None and not _head_pending(self):
            deadline.cancel()  # the head is complete: the request (or the upgrade) is under way
            self._wsgroups_deadline = None

    def connection_lost_disarmed(self: Any, exc: Exception | None) -> None:
        deadline = getattr(self, "_wsgroups_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._wsgroups_deadline = None
        connection_lost(self, exc)

    cls.connection_made = connection_made_with_deadline
    cls.data_received = data_received_bounded
    cls.connection_lost = connection_lost_disarmed
    cls._wsgroups_adapted = True


def _adapt_websocket_protocol(cls: Any) -> None:
    """Four fixes to uvicorn's sans-I/O WebSocket protocol (websockets' ``ServerProtocol``),
    and less memory per socket (see :mod:`wsgroups.servers.queues`; the handshake's request
    and response, with their headers, are let go once the 101 has gone out):

    - messages over ``MAX_MESSAGE_SIZE`` are refused (1009) as soon as a frame header
      announces them, not after ``--ws-max-size`` (16 MiB) has been buffered;
    - a ``Sec-WebSocket-Version`` other than 13 gets 426 with ``Sec-WebSocket-Version: 13``
      (RFC 6455 4.2.2), not 400;
    - a request head websockets cannot parse (over 128 headers, a line over 8 KiB) gets the
      refusal websockets prepared (414 or 431; 400 under releases before 17, which prepare
      none): uvicorn writes only when an event comes, and none does,
      so the connection hung with no answer;
    - a refused upgrade's handshake is marked done once its response has gone out, or
      uvicorn logs "ASGI callable returned without completing handshake." at ERROR for
      every refusal, and a flood of refused upgrades floods the log.
    """
    if getattr(cls, "_wsgroups_adapted", False):
        return
    init = cls.__init__
    connection_made = cls.connection_made
    handle_connect = cls.handle_connect
    data_received = cls.data_received
    send = cls.send

    def init_with_lean_state(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.queue = ReceiveQueue()
        self.writable = Flag(True)

    def connection_made_with_size_limit(self: Any, transport: Any) -> None:
        connection_made(self, transport)
        conn = getattr(self, "conn", None)
        limit = conf.MAX_MESSAGE_SIZE
        if conn is not None and (conn.max_message_size is None or conn.max_message_size > limit):
            conn.max_message_size = limit

    def handle_connect_checking_version(self: Any, event: Any) -> None:
        version = event.headers.get("Sec-WebSocket-Version")
        if version is None or version.strip() == WEBSOCKET_VERSION:
            handle_connect(self, event)
            return
        response = self.conn.reject(426, f"WebSocket version {version} is not supported; use {WEBSOCKET_VERSION}.\n")
        response.headers["Sec-WebSocket-Version"] = WEBSOCKET_VERSION
        self.request = event
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    def data_received_answering_bad_heads(self: Any, data: bytes) -> None:
        data_received(self, data)
        if (
            not self.handshake_initiated
            and getattr(self.conn, "handshake_exc", None) is not None
            and not self.transport.is_closing()
        ):
            # websockets 17 prepares a 414 or 431; older releases only end the connection.
            prepared = b"".join(self.conn.data_to_send())
            self.transport.write(prepared or head_refusal(400))
            self.transport.close()

    async def send_marking_refusals(self: Any, message: Any) -> None:
        await send(self, message)
        kind = message.get("type")
        if kind == "websocket.accept" and self.handshake_complete:
            self.request = self.response = None  # read only until the 101 is written
        elif kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True

    cls.__init__ = init_with_lean_state
    cls.connection_made = connection_made_with_size_limit
    cls.handle_connect = handle_connect_checking_version
    cls.data_received = data_received_answering_bad_heads
    cls.send = send_marking_refusals
    cls._wsgroups_adapted = True


def _apply_compression_setting(cls: Any) -> None:
    """Make ``PERMESSAGE_DEFLATE`` decide whether the WebSocket protocol ``cls`` negotiates
    permessage-deflate: every implementation reads uvicorn's ``ws_per_message_deflate``
    (on by default) from the server's config, which is set to the setting before the
    first connection reads it; a differing command-line value is logged once and
    overridden, so that one project compresses alike under every server."""
    if getattr(cls, "_wsgroups_deflate_adapted", False):
        return
    init = cls.__init__

    def init_with_setting(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        wanted = conf.PERMESSAGE_DEFLATE
        if getattr(config, "ws_per_message_deflate", wanted) != wanted:
            logger.info(
                "permessage-deflate is %s (WSGROUPS['PERMESSAGE_DEFLATE'] = %s); uvicorn's "
                "--ws-per-message-deflate %s is overridden",
                "on" if wanted else "off",
                wanted,
                config.ws_per_message_deflate,
            )
            config.ws_per_message_deflate = wanted
        init(self, config, *args, **kwargs)

    cls.__init__ = init_with_setting
    cls._wsgroups_deflate_adapted = True


def install() -> None:
    """Adapt every HTTP protocol class of the installed uvicorn (httptools and h11), its
    sans-I/O WebSocket protocol, and the compression of the WebSocket implementation it runs."""
    for module_name, class_name in _PROTOCOL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # httptools or h11 not installed: uvicorn cannot use that one either
            continue
        _adapt(getattr(module, class_name))
    for module_name, class_name in _WEBSOCKET_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation of websockets' legacy API, in uvicorn and websockets
                module = importlib.import_module(module_name)
        except ImportError:  # websockets or wsproto not installed: uvicorn cannot run that one
            continue
        _apply_compression_setting(getattr(module, class_name))
    try:
        sansio = importlib.import_module("uvicorn.protocols.websockets.websockets_sansio_impl")
    except ImportError:
        return
    _adapt_websocket_protocol(sansio.WebSocketsSansIOProtocol)
