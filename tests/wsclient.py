"""Client helpers for the end-to-end tests: a raw handshake reader and frame utilities."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from dataclasses import dataclass

import async_timeout
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


def _parse_head(data: bytes, sock: socket.socket) -> RawResponse:
    """The response head in ``data`` and what followed it so far."""
    head, _, rest = data.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in head_lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return RawResponse(head_lines[0], headers, rest, sock)


def raw_handshake(
    port: int,
    path: str,
    extra_headers: dict[str, str] | None = None,
    timeout: float = 10,
    source: str | None = None,
    host: str | None = None,
) -> RawResponse:
    """Send an upgrade request over a plain socket (from loopback address ``source``, if
    given; with ``host`` as its Host, if given) and parse the response head (and body)."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
    )
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
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
    response = _parse_head(data, sock)
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
        async with async_timeout.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "the server closed without a close frame"
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("unreachable")


# Raw frames and handshakes for hostile clients: every field under the caller's control.

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame with every header field chosen by the caller, valid or not.

    ``opcode`` is any 4-bit value; ``mask=False`` sends the payload unmasked (which a server
    must refuse); ``length`` writes that payload length into the header whatever the real
    payload is (in the shortest form that holds it).
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"an opcode has 4 bits, got {opcode!r}")
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | (0x10 if rsv3 else 0) | opcode
    size = len(payload) if length is None else length
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """The body of a close frame: the code in network order, then the raw reason bytes."""
    return struct.pack("!H", code) + reason


@dataclass
class ServerFrame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes


def _recv_into(sock: socket.socket, buffer: bytearray, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no complete frame from the server in time")
    sock.settimeout(remaining)
    try:
        chunk = sock.recv(65536)
    except TimeoutError:
        raise TimeoutError("no complete frame from the server in time") from None
    if not chunk:
        raise EOFError("the server closed the TCP connection")
    buffer += chunk


def read_server_frame(sock: socket.socket, timeout: float = 10, buffer: bytearray | None = None) -> ServerFrame:
    """Read one whole frame from ``sock``, starting with the bytes already in ``buffer``.

    ``buffer`` (for instance ``bytearray(response.body)`` after a 101) is consumed in place,
    so consecutive calls share it. Raises EOFError when TCP closes first, TimeoutError when
    no whole frame arrives within ``timeout`` seconds.
    """
    buffer = bytearray() if buffer is None else buffer
    deadline = time.monotonic() + timeout
    while len(buffer) < 2:
        _recv_into(sock, buffer, deadline)
    size, offset = buffer[1] & 0x7F, 2
    if size == 126:
        while len(buffer) < 4:
            _recv_into(sock, buffer, deadline)
        size, offset = struct.unpack("!H", bytes(buffer[2:4]))[0], 4
    elif size == 127:
        while len(buffer) < 10:
            _recv_into(sock, buffer, deadline)
        size, offset = struct.unpack("!Q", bytes(buffer[2:10]))[0], 10
    masked = bool(buffer[1] & 0x80)
    end = offset + (4 if masked else 0) + size
    while len(buffer) < end:
        _recv_into(sock, buffer, deadline)
    payload = bytes(buffer[end - size : end])
    if masked:
        key = buffer[offset : offset + 4]
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    frame = ServerFrame(bool(buffer[0] & 0x80), (buffer[0] >> 4) & 0x7, buffer[0] & 0x0F, masked, payload)
    del buffer[:end]
    return frame


def read_frame(sock: socket.socket, timeout: float = 10, buffer: bytearray | None = None) -> tuple[int, bytes]:
    """``(opcode, payload)`` of the next server frame; see :func:`read_server_frame`."""
    frame = read_server_frame(sock, timeout, buffer)
    return frame.opcode, frame.payload


@dataclass
class CloseOutcome:
    """How a server ended a raw connection: its close frame, or TCP dropped without one."""

    code: int | None  # None: TCP closed (or reset) with no close frame; 1005: empty close frame
    reason: bytes
    frames_before: list[ServerFrame]

    @property
    def dropped(self) -> bool:
        return self.code is None


def read_close(
    sock: socket.socket, timeout: float = 10, buffer: bytearray | None = None, max_frames: int = 1000
) -> CloseOutcome:
    """Read until the server's close frame (at most ``max_frames`` frames, ``timeout`` seconds).

    Returns the close code and raw reason bytes, with the frames that came before it; a
    code of None means the server closed TCP without a close frame. Raises TimeoutError
    when the connection is still open and silent at the deadline.
    """
    buffer = bytearray() if buffer is None else buffer
    deadline = time.monotonic() + timeout
    before: list[ServerFrame] = []
    for _ in range(max_frames):
        try:
            frame = read_server_frame(sock, max(deadline - time.monotonic(), 0.001), buffer)
        except (EOFError, ConnectionResetError):
            return CloseOutcome(None, b"", before)
        if frame.opcode == OP_CLOSE:
            if not frame.payload:
                return CloseOutcome(1005, b"", before)
            return CloseOutcome(struct.unpack("!H", frame.payload[:2])[0], frame.payload[2:], before)
        before.append(frame)
    raise AssertionError(f"no close frame among the first {max_frames} frames")


def handshake_request(port: int, path: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    """An upgrade request with exactly the given headers after ``Host`` (none added)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def websocket_headers(
    key: str | None = "", version: str | None = "13", extra: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """The upgrade headers, each replaceable: ``key=""`` is a fresh valid key, None leaves it out."""
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if key is not None:
        headers.append(("Sec-WebSocket-Key", key or base64.b64encode(os.urandom(16)).decode()))
    if version is not None:
        headers.append(("Sec-WebSocket-Version", version))
    return headers + (extra or [])


def send_raw_request(port: int, request: bytes, timeout: float = 10) -> RawResponse | None:
    """Send ``request`` as is and read the response head and body.

    Returns None when the server closes (or resets) the connection without a response;
    raises TimeoutError when it neither answers nor closes within ``timeout`` seconds.
    The body is read up to Content-Length, or to EOF (bounded by the timeout) without one.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may refuse before reading it all; its answer can still be read
    data = bytearray()
    while b"\r\n\r\n" not in data:
        try:
            _recv_into(sock, data, deadline)
        except (EOFError, ConnectionResetError):
            if not data:
                sock.close()
                return None
            break
        except TimeoutError:
            sock.close()
            raise TimeoutError(f"no answer and no close within {timeout} s (got {bytes(data)!r})") from None
    response = _parse_head(bytes(data), sock)
    if response.status == 101:
        return response
    length = response.header("Content-Length")
    body = bytearray(response.body)
    while len(body) < (int(length[0]) if length else 1 << 20):
        try:
            _recv_into(sock, body, deadline)
        except (EOFError, ConnectionResetError, TimeoutError):
            break
    response.body = bytes(body)
    return response
