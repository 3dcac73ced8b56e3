"""Client helpers for the end-to-end tests: a raw handshake reader and frame utilities."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed


@dataclass
class RawResponse:
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes
    sock: socket.socket

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ", 2)[1])

    @property
    def reason(self) -> str:
        parts = self.status_line.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def close(self) -> None:
        self.sock.close()


def raw_handshake(
    port: int, path: str, extra_headers: dict[str, str] | None = None, timeout: float = 10
) -> RawResponse:
    """Send an upgrade request over a plain socket and parse the response head (and body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in (extra_headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in head_lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    response = RawResponse(head_lines[0], headers, rest, sock)
    length = response.header("Content-Length")
    if response.status != 101 and length:
        while len(response.body) < int(length[0]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response.body += chunk
    return response


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def first_text_frame(response: RawResponse) -> str:
    """The first (short, unfragmented) text frame the server sent after the 101."""
    data = response.body
    while len(data) < 2 or len(data) < 2 + data[1]:
        chunk = response.sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed before its first frame")
        data += chunk
    return data[2 : 2 + data[1]].decode()


async def close_of(ws: ClientConnection, timeout: float = 10) -> tuple[int, str]:
    """Read until the server closes; return the close code and reason it sent."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "the server closed without a close frame"
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("unreachable")
