"""permessage-deflate (RFC 7692) as ``PERMESSAGE_DEFLATE`` says, under daphne, uvicorn and hypercorn.

With the setting on, a client that offers the extension gets it, the server's frames are
compressed on the wire (RSV1 set, smaller payload) and messages echo intact both ways; a
compressed message inflating past ``MAX_MESSAGE_SIZE`` is refused with 1009 (under
hypercorn once inflated: hypercorn bounds it by its own 16 MiB limit). With it
off, the offer is ignored and frames go uncompressed, whatever the server's own default.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.conformance import ENDPOINT, MAX_MESSAGE_SIZE, SERVERS, server_env

from .conftest import Server
from .wsclient import client_frame, raw_handshake, read_server_frame

pytestmark = pytest.mark.e2e

TEXT = "wsgroups compresses this line well. " * 300  # 10,800 bytes


def _start(server_factory: Callable[..., Server], kind: str, deflate: bool) -> Server:
    return server_factory(kind, extra_env=server_env({}, deflate))


@pytest.mark.parametrize("deflate", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("kind", SERVERS)
def test_websockets_client_gets_permessage_deflate_as_set(
    kind: str, deflate: bool, server_factory: Callable[..., Server]
) -> None:
    server = _start(server_factory, kind, deflate)

    async def exchange() -> tuple[str | None, list[str], object, object]:
        async with connect(f"{server.url}{ENDPOINT}", open_timeout=20) as ws:  # offers permessage-deflate
            await ws.send(TEXT)
            text = await asyncio.wait_for(ws.recv(), 10)
            await ws.send(TEXT.encode())
            data = await asyncio.wait_for(ws.recv(), 10)
            extensions = [extension.name for extension in ws.protocol.extensions]
            return ws.response.headers.get("Sec-WebSocket-Extensions"), extensions, text, data

    header, extensions, text, data = asyncio.run(exchange())
    assert (text, data) == (TEXT, TEXT.encode())
    if deflate:
        assert header is not None and header.startswith("permessage-deflate"), header
        assert extensions == ["permessage-deflate"]
    else:
        assert header is None
        assert extensions == []


@pytest.mark.parametrize("deflate", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("kind", SERVERS)
def test_server_frames_are_compressed_on_the_wire_only_when_on(
    kind: str, deflate: bool, server_factory: Callable[..., Server]
) -> None:
    server = _start(server_factory, kind, deflate)
    response = raw_handshake(server.port, ENDPOINT, {"Sec-WebSocket-Extensions": "permessage-deflate"})
    try:
        assert response.status == 101
        assert bool(response.header("Sec-WebSocket-Extensions")) is deflate
        # An uncompressed frame (RSV1 clear) is allowed on a compressing connection too.
        response.sock.sendall(client_frame(0x1, TEXT.encode()))
        frame = read_server_frame(response.sock, timeout=10, buffer=bytearray(response.body))
    finally:
        response.close()
    assert frame.opcode == 0x1 and frame.fin
    if deflate:
        assert frame.rsv == 4  # RSV1: a compressed message
        assert len(frame.payload) < len(TEXT) // 10
        assert zlib.decompressobj(-15).decompress(frame.payload + b"\x00\x00\xff\xff") == TEXT.encode()
    else:
        assert frame.rsv == 0
        assert frame.payload == TEXT.encode()


@pytest.mark.parametrize("kind", SERVERS)
def test_a_message_inflating_past_the_limit_is_refused_with_1009(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    server = _start(server_factory, kind, deflate=True)

    async def bomb() -> int | None:
        async with connect(f"{server.url}{ENDPOINT}", open_timeout=20, max_size=None) as ws:
            assert ws.protocol.extensions
            await ws.send(b"\0" * (MAX_MESSAGE_SIZE + 1))  # a few hundred bytes on the wire
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                pass
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code

    assert asyncio.run(bomb()) == 1009
