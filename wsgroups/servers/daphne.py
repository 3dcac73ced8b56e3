"""The daphne adapter: 101 headers, close reasons, every close code, and HTTP rejections.

Stock daphne (4.x) drops the ``headers`` of ``websocket.accept`` and the ``reason`` of
``websocket.close``, answers every rejection with 403, and goes through autobahn's
``sendClose``, which refuses every code but 1000 and 3000-4999. It also closes every
socket after ``websocket_timeout`` (a day by default), and autobahn answers protocol
errors such as invalid UTF-8 by dropping TCP instead of closing with 1007; and it
buffers without bound for a client that stops reading; and it never negotiates
permessage-deflate, which autobahn implements. This module subclasses daphne's protocol
to fix exactly those points (compression as ``PERMESSAGE_DEFLATE`` says) and leaves the
rest of daphne alone: its request header sanitising, its handshake timeout and
autobahn's frame and message size limits stay in force. It also removes two costs per
connection of autobahn (:mod:`wsgroups.servers.autobahn_settings`) and gives each socket
the lean receive queue and flag of :mod:`wsgroups.servers.queues` in place of daphne's
``asyncio.Queue`` and an ``asyncio.Event``.

:func:`install` is called by :func:`wsgroups.asgi.get_asgi_application` whenever the
process runs daphne (``daphne ...`` or ``manage.py runserver`` with daphne installed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny
from daphne import http_protocol, ws_protocol
from twisted.internet import tcp

from ..codes import MAX_CLOSE_REASON_BYTES
from ..conf import conf
from ..handshake import WEBSOCKET_VERSION, check_header_bytes, head_refusal, serialize_response
from .autobahn_settings import defer_debug_formatting, share_settings
from .queues import Flag, ReceiveQueue

__all__ = ["RESPONSE_EXTENSION", "WebSocketProtocol", "answer_offers", "install"]

logger = logging.getLogger("wsgroups.daphne")

RESPONSE_EXTENSION = "websocket.http.response"
#: Seconds past HANDSHAKE_TIMEOUT before daphne itself gives up on an upgrade.
HANDSHAKE_GRACE = 5.0
#: The server's compression window (2**12 bytes) and zlib memory level, as uvicorn's: about
#: 32 KiB of zlib state per compressing socket instead of zlib's default 256 KiB.
DEFLATE_WINDOW_BITS = 12
DEFLATE_MEM_LEVEL = 5


def answer_offers(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    """autobahn's ``perMessageCompressionAccept``: while ``PERMESSAGE_DEFLATE`` is on, accept
    the first permessage-deflate offer, else decline them all.

    The server's window is at most :data:`DEFLATE_WINDOW_BITS`; the client's stays its own
    (autobahn drops the value of its ``client_max_window_bits``, which a request could
    exceed). A message inflating past ``MAX_MESSAGE_SIZE`` is refused with 1009 as it inflates."""
    for offer in offers if conf.PERMESSAGE_DEFLATE else ():
        if isinstance(offer, PerMessageDeflateOffer):
            window = min(offer.request_max_window_bits or DEFLATE_WINDOW_BITS, DEFLATE_WINDOW_BITS)
            return PerMessageDeflateOfferAccept(  # type: ignore[no-untyped-call]
                offer, window_bits=window, mem_level=DEFLATE_MEM_LEVEL, max_message_size=conf.MAX_MESSAGE_SIZE
            )
    return None


class WebSocketProtocol(ws_protocol.WebSocketProtocol):  # type: ignore[misc]
    """daphne's WebSocket protocol with the handshake and close features ASGI promises."""

    _rejection: tuple[int, list[tuple[bytes, bytes]], str | None] | None = None
    #: The factory whose settings are this class's attributes (daphne has one).
    _settings_from: Any = None
    last_ping: float
    _rejection_body: list[bytes]

    def _connectionMade(self) -> None:
        # autobahn aborts a handshake after openHandshakeTimeout (daphne: its connect
        # timeout, 5 s by default); give the view HANDSHAKE_TIMEOUT and wsgroups the time to
        # answer 503 itself.
        self.factory.openHandshakeTimeout = conf.HANDSHAKE_TIMEOUT + HANDSHAKE_GRACE
        # A frame announcing more than MAX_MESSAGE_SIZE is refused (1009) from its header,
        # before its payload is buffered. (The message limit also bounds what autobahn
        # sends, so it stays daphne's.)
        limit = conf.MAX_MESSAGE_SIZE
        if not 0 < self.factory.maxFramePayloadSize <= limit:
            self.factory.maxFramePayloadSize = limit
        # Answer a client's close with its own code and reason (RFC 6455 5.5.1); autobahn
        # otherwise answers 1000 whatever the client sent.
        self.factory.echoCloseCodeReason = True
        # autobahn answers permessage-deflate offers through this (daphne leaves its refusal).
        self.factory.perMessageCompressionAccept = answer_offers
        share_settings(type(self), self.factory)
        super()._connectionMade()
        self.versions = [int(WEBSOCKET_VERSION)]  # autobahn also serves hybi-10 (version 8)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # RFC 6455 4.2.2: a version the server does not speak gets 426 and the one it does.
        version = (getattr(self, "http_headers", None) or {}).get("sec-websocket-version")
        if version is not None and version.strip() != WEBSOCKET_VERSION:
            code, responseHeaders = 426, [("Sec-WebSocket-Version", WEBSOCKET_VERSION)]
        super().failHandshake(reason, code, responseHeaders)

    def onConnect(self, request: Any) -> Any:
        _advertise_response_extension(self.factory.server_class)
        # daphne decodes these as ASCII and answers a failure with a 500 that quotes the
        # exception; a client sending them gets a plain 400.
        if not request.path.isascii() or any(
            not name.isascii() or (name.lower() == "sec-websocket-protocol" and not value.isascii())
            for name, value in request.headers.items()
        ):
            raise ConnectionDeny(400, "Bad Request")  # type: ignore[no-untyped-call]
        return super().onConnect(request)

    def onOpen(self) -> None:
        # Learn when the client stops reading (twisted's write buffer passes its high-water
        # mark): sends then wait, as under uvicorn, instead of buffering without bound.
        self.writable = Flag(True)
        # The HTTP channel that handed the connection over is still registered as its producer.
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self.transport.registerProducer(self, True)
        self.autoPingTimeout = conf.PING_TIMEOUT
        # autobahn's default drops TCP on a protocol error (invalid UTF-8, oversized
        # message); send the close frame (1007, 1009, ...) so the client learns why.
        self.failByDrop = False
        super().onOpen()

    def handle_reply(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        connecting = self.state == self.STATE_CONNECTING
        if kind == "websocket.accept" and connecting:
            self._accept(message)
        elif kind == "websocket.close" and self.state == self.STATE_OPEN:
            code = message.get("code") or 1000
            reason = (message.get("reason") or "").encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
            # sendCloseFrame, unlike sendClose, does not restrict the code to 1000/3000-4999.
            self.sendCloseFrame(code=code, reasonUtf8=reason or None)
        elif kind == "websocket.send" and self.state == self.STATE_OPEN:
            # daphne's own handler tests the payload's truth, so empty messages never left.
            data, text = message.get("bytes"), message.get("text")
            if data is not None and text is not None:
                raise ValueError("websocket.send carries both bytes and text")
            if data is not None:
                self.serverSend(data, True)
            elif text is not None:
                self.serverSend(text, False)
        elif kind == "websocket.http.response.start" and connecting and self._rejection is None:
            self._rejection = (message["status"], list(message.get("headers") or []), message.get("reason"))
            self._rejection_body = []
        elif kind == "websocket.http.response.body" and self._rejection is not None:
            self._rejection_body.append(message.get("body") or b"")
            if not message.get("more_body", False):
                self._send_rejection()
        else:
            super().handle_reply(message)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Write straight to the socket while twisted's buffer is empty, as asyncio transports do.

        Twisted queues every write and registers the socket for writability, then
        unregisters it once flushed: two ``epoll_ctl`` calls per frame per socket, the
        largest cost of a fan-out. Whatever the socket does not take at once goes
        through twisted as before, so ordering and back-pressure are unchanged.
        """
        transport = self.transport
        if sync or chopsize or self.send_queue or self.logOctets or not _writable_now(transport):
            super().sendData(data, sync, chopsize)
            return
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            super().sendData(data, sync, chopsize)  # twisted reports the broken connection
            return
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        if sent < len(data):
            transport.write(data[sent:])

    # IPushProducer: twisted pauses us while its write buffer is full.
    def pauseProducing(self) -> None:
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:
        self.writable.set()

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        if hasattr(self, "writable"):
            self.writable.set()
        queue = getattr(self, "application_queue", None)
        if wasClean and reason and queue is not None:
            # daphne reports the client's close code but drops its reason (ASGI has a field
            # for it); autobahn's reason for an unclean close is its own text, not the client's.
            self.application_queue = _AddingReason(queue, reason)
        super().onClose(wasClean, code, reason)

    def _accept(self, message: dict[str, Any]) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in message.get("headers") or ():
            name, value = check_header_bytes(name, "header name"), check_header_bytes(value, "header value")
            headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        self.handshake_deferred.callback((message.get("subprotocol"), headers))
        del self.handshake_deferred
        logger.debug("WebSocket %s accepted by application", self.client_addr)

    def _send_rejection(self) -> None:
        assert self._rejection is not None
        status, headers, reason = self._rejection
        self.sendData(serialize_response(status, headers, reason, b"".join(self._rejection_body)))
        self._rejection_body = []
        if hasattr(self, "handshake_deferred"):
            del self.handshake_deferred
        self.dropConnection(abort=False)
        self.server.protocol_disconnected(self)
        address = getattr(self, "client_addr", None)
        client = f"{address[0]}:{address[1]}" if address else None
        # daphne's access log reads "client" and "path" of every websocket action.
        self.server.log_action("websocket", "rejected", {"path": self.request.path, "client": client, "status": status})

    def check_timeouts(self) -> None:
        """daphne's timer, without the maximum socket lifetime; pings every ``PING_INTERVAL``."""
        if self.state == self.STATE_CONNECTING:
            # wsgroups refuses with 503 after HANDSHAKE_TIMEOUT; this only catches an app that never answers.
            if self.duration() > conf.HANDSHAKE_TIMEOUT + HANDSHAKE_GRACE and hasattr(self, "handshake_deferred"):
                self.serverReject()
        elif self.state == self.STATE_OPEN and time.time() - self.last_ping > conf.PING_INTERVAL:
            self._sendAutoPing()
            self.last_ping = time.time()


class _AddingReason:
    """A receive queue whose ``websocket.disconnect`` events get the client's close reason."""

    __slots__ = ("queue", "reason")

    def __init__(self, queue: Any, reason: str) -> None:
        self.queue, self.reason = queue, reason

    def put_nowait(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.disconnect":
            message = {**message, "reason": self.reason}
        self.queue.put_nowait(message)


def _writable_now(transport: Any) -> bool:
    """A plain TCP transport with nothing buffered (twisted internals, checked defensively)."""
    return bool(
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_writeDisconnected", True)
        and not getattr(transport, "_tempDataBuffer", True)
        and len(getattr(transport, "dataBuffer", b"x")) <= getattr(transport, "offset", -1)
    )


def _advertise_response_extension(server: Any) -> None:
    """Make the server add ``websocket.http.response`` to the scopes of our protocol, and
    make ``websocket.send`` wait while the client's write buffer is full."""
    if getattr(server, "_wsgroups_adapted", False):
        return
    create_application = server.create_application
    handle_reply = server.handle_reply

    def create_with_extension(protocol: Any, scope: dict[str, Any]) -> Any:
        if not isinstance(protocol, WebSocketProtocol):
            return create_application(protocol, scope)
        # daphne's create_application, with the lean queue in place of an asyncio.Queue.
        scope = {
            **scope,
            "asgi": scope.get("asgi") or {"version": "3.0"},
            "extensions": {**(scope.get("extensions") or {}), RESPONSE_EXTENSION: {}},
        }
        queue = ReceiveQueue()
        instance = server.application(scope=scope, receive=queue.get, send=partial(server.handle_reply, protocol))
        connection = server.connections.get(protocol)
        if connection is None:  # the client left while the application was being made
            close = getattr(instance, "close", None)
            if close is not None:
                close()  # a coroutine never awaited
            return None
        connection["application_instance"] = asyncio.ensure_future(instance)
        return queue

    async def handle_reply_when_writable(protocol: Any, message: dict[str, Any]) -> None:
        writable = getattr(protocol, "writable", None)
        if writable is not None and message.get("type") == "websocket.send" and not writable.is_set():
            await writable.wait()
        await handle_reply(protocol, message)

    server.create_application = create_with_extension
    server.handle_reply = handle_reply_when_writable
    server._wsgroups_adapted = True


def _adapt_http_factory() -> None:
    """Give each connection ``HANDSHAKE_TIMEOUT`` to send a complete request head.

    Twisted's own timeout is an idle timeout, which a client sending a byte at a time
    (slowloris) never reaches; its 16 KiB bound on the head stays in force.
    """
    if getattr(http_protocol.HTTPFactory, "_wsgroups_adapted", False):
        return
    build_protocol = http_protocol.HTTPFactory.buildProtocol

    def build_with_deadline(factory: Any, addr: Any) -> Any:
        wrapper = build_protocol(factory, addr)
        channel = getattr(wrapper, "_channel", None)
        if channel is not None and hasattr(channel, "_handlingRequest"):
            _bound_request_heads(wrapper, channel)
        return wrapper

    http_protocol.HTTPFactory.buildProtocol = build_with_deadline
    http_protocol.HTTPFactory._wsgroups_adapted = True


def _bound_request_heads(wrapper: Any, channel: Any) -> None:
    """Arm a deadline whenever the channel waits for a request head; drop it once the head is in."""
    from twisted.internet import reactor as twisted_reactor

    reactor: Any = twisted_reactor  # typed as the interface, whose methods lack self
    deadline: list[Any] = []

    def expire() -> None:
        deadline.clear()
        transport = channel.transport
        if (
            channel._handlingRequest
            or transport is None
            or getattr(transport, "disconnecting", False)
            or getattr(transport, "protocol", wrapper) is not wrapper  # upgraded to a WebSocket
        ):
            return
        logger.debug("Connection from %s sent no complete request head in time: 408", transport.getPeer())
        transport.write(head_refusal(408))
        transport.loseConnection()

    def arm() -> None:
        deadline.append(reactor.callLater(conf.HANDSHAKE_TIMEOUT, expire))

    data_received = channel.dataReceived
    connection_lost = channel.connectionLost

    def data_received_with_deadline(data: bytes) -> None:
        if not deadline and not channel._handlingRequest:
            arm()  # the next request of a kept-alive connection
        data_received(data)
        if deadline and channel._handlingRequest:
            deadline.pop().cancel()

    def connection_lost_disarmed(reason: Any) -> None:
        while deadline:
            call = deadline.pop()
            if call.active():
                call.cancel()
        connection_lost(reason)

    channel.dataReceived = data_received_with_deadline
    channel.connectionLost = connection_lost_disarmed
    arm()


def install(on_start: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
    """Make daphne build :class:`WebSocketProtocol` for every WebSocket connection and bound
    the time a connection may take to send its request head; run ``on_start`` on daphne's
    event loop as soon as it runs (daphne has no ASGI lifespan to say so)."""
    ws_protocol.WebSocketFactory.protocol = WebSocketProtocol
    defer_debug_formatting()
    _adapt_http_factory()
    if on_start is not None:
        from twisted.internet import reactor as twisted_reactor

        started: list[asyncio.Future[None]] = []  # keeps the task referenced
        twisted_reactor.callWhenRunning(lambda: started.append(asyncio.ensure_future(on_start())))
