"""Generators of fuzz cases for a WebSocket server: seed in, bytes out.

Nothing here touches a socket or the clock: ``make_case(seed, index)`` always returns the
same case, so any case of a run can be replayed from the seed and its index.
:mod:`bench.fuzz` sends the cases to real servers and checks what comes back.

Two kinds of case:

- :class:`FrameCase`: after a normal upgrade to ``/ws/echo``, a sequence of client frames
  (text and binary messages of random sizes up to the message limit, fragmented or not,
  pings and unsolicited pongs between them), then one ending: a normal close, an invalid
  frame (bad opcode, RSV bits, unmasked, bad UTF-8, oversized or fragmented control
  frame, stray continuation, oversized message) or a truncated frame and a TCP close.
- :class:`HandshakeCase`: one raw upgrade request, mutated (header names and values,
  order, missing and duplicated headers, garbage request lines, odd paths with
  percent-encoded and non-ASCII bytes), and the HTTP statuses its path may answer with.
"""

from __future__ import annotations

import base64
import itertools
import random
import struct
from dataclasses import dataclass, field

__all__ = [
    "MAX_MESSAGE_SIZE",
    "Ending",
    "FrameCase",
    "HandshakeCase",
    "Message",
    "Step",
    "frame",
    "make_case",
    "mask_payload",
]

#: The servers' ``MAX_MESSAGE_SIZE`` (tests/settings.py): messages up to it are echoed.
MAX_MESSAGE_SIZE = 64 * 1024

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: Texts the ``echo`` handler acts on instead of echoing start with none of these.
TEXT_PREFIX = "~"


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (RFC 6455, section 5.3)."""
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x00\x00\x00\x00",
    length: int | None = None,
) -> bytes:
    """One frame as a client sends it; ``mask=None`` leaves it unmasked (a protocol error),
    ``length`` overrides the length field (which then lies about the payload)."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if mask is not None else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + mask_payload(payload, mask)


@dataclass(frozen=True)
class Message:
    """A valid message the server must echo: ``opcode`` TEXT or BINARY and its payload."""

    opcode: int
    payload: bytes


@dataclass(frozen=True)
class Step:
    """Bytes the client sends at once; ``message`` is what they complete (None for control
    frames), ``pings`` the ping payloads among them."""

    data: bytes
    message: Message | None = None
    pings: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Ending:
    """How a frame case ends.

    ``kind`` is ``"close"`` (a normal close, the server echoes it), ``"invalid"`` (the server
    must close, with ``expect_code`` if it sends a close frame and ``expect_code`` is set) or
    ``"truncated"`` (the client drops TCP in the middle of a frame).
    """

    kind: str
    name: str
    data: bytes
    expect_code: int | None = None


@dataclass(frozen=True)
class FrameCase:
    index: int
    steps: tuple[Step, ...]
    ending: Ending

    @property
    def description(self) -> str:
        sizes = [len(step.message.payload) for step in self.steps if step.message is not None]
        return f"case {self.index}: frames, messages of {sizes} bytes, ending {self.ending.name}"


@dataclass(frozen=True)
class HandshakeCase:
    index: int
    request: bytes
    path: str
    mutations: tuple[str, ...]
    #: Statuses besides 101 and 4xx that the view of ``path`` answers with.
    view_statuses: frozenset[int] = field(default_factory=frozenset)

    @property
    def description(self) -> str:
        return f"case {self.index}: handshake {self.path!r}, mutations {list(self.mutations)}"


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"wsgroups-fuzz:{seed}:{index}")


def _mask(rng: random.Random) -> bytes:
    return rng.randbytes(4)


def _size(rng: random.Random) -> int:
    """Mostly small messages, some large, a few empty, a few exactly at the limit."""
    roll = rng.random()
    if roll < 0.04:
        return 0
    if roll < 0.55:
        return rng.randint(0, 125)
    if roll < 0.8:
        return rng.randint(126, 4096)
    if roll < 0.95:
        return rng.randint(4097, MAX_MESSAGE_SIZE)
    return MAX_MESSAGE_SIZE


_ALPHABETS = [
    "abcdefghij 0123456789",
    "é€ñ中文字😀𝄞",
    "\x00\t\x7f\u2028\ufeff",
    "\u0295\u2022\u1d25\u2022\u0294 \u2603 \u0301",
]


def _text(rng: random.Random, size: int) -> bytes:
    """UTF-8 text of at most ``size`` bytes, starting with :data:`TEXT_PREFIX` unless empty."""
    if size == 0:
        return b""
    alphabet = rng.choice(_ALPHABETS)
    out = bytearray(TEXT_PREFIX.encode())
    while True:
        char = rng.choice(alphabet).encode()
        if len(out) + len(char) > max(size, 1):
            return bytes(out)
        out += char
        if len(out) >= size:
            return bytes(out)


def _payload(rng: random.Random, opcode: int, size: int) -> bytes:
    if opcode == TEXT:
        return _text(rng, size)
    return rng.randbytes(size)


def _control_payload(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(0, 125))


def _fragments(rng: random.Random, payload: bytes, opcode: int) -> list[tuple[int, bytes, bool]]:
    """``(opcode, chunk, fin)`` frames carrying ``payload``; chunks may split UTF-8 sequences."""
    if not payload or rng.random() < 0.6:
        return [(opcode, payload, True)]
    count = rng.randint(2, min(6, len(payload) + 1))
    cuts = sorted(rng.sample(range(len(payload) + 1), count - 1))
    bounds = [0, *cuts, len(payload)]
    chunks = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    return [(opcode if i == 0 else CONT, chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks)]


def _message_step(rng: random.Random, opcode: int, payload: bytes) -> Step:
    data = b""
    pings: list[bytes] = []
    pieces = _fragments(rng, payload, opcode)
    for i, (op, chunk, fin) in enumerate(pieces):
        data += frame(op, chunk, fin=fin, mask=_mask(rng))
        if not fin and i < len(pieces) - 1 and rng.random() < 0.3:  # control frames may interleave
            ping = _control_payload(rng)
            pings.append(ping)
            data += frame(PING, ping, mask=_mask(rng))
    return Step(data, Message(opcode, payload), tuple(pings))


def _bad_utf8(rng: random.Random) -> bytes:
    good = _text(rng, rng.randint(1, 200))
    bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"])
    return good + bad + _text(rng, rng.randint(0, 20))[len(TEXT_PREFIX) :]


def _ending(rng: random.Random) -> Ending:
    m = _mask(rng)
    choice = rng.choice(
        [
            "close",
            "close",
            "close",
            "bad-opcode",
            "rsv-bits",
            "unmasked",
            "bad-utf8",
            "bad-utf8-fragmented",
            "oversized-ping",
            "fragmented-ping",
            "stray-continuation",
            "oversized-message",
            "truncated-header",
            "truncated-payload",
            "bad-close-code",
        ]
    )
    if choice == "close":
        reason = _text(rng, rng.randint(0, 60))
        return Ending("close", "close", frame(CLOSE, struct.pack("!H", 1000) + reason, mask=m), 1000)
    if choice == "bad-opcode":
        opcode = rng.choice([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
        return Ending("invalid", f"opcode {opcode:#x}", frame(opcode, rng.randbytes(rng.randint(0, 30)), mask=m))
    if choice == "rsv-bits":
        rsv = rng.randint(1, 7)
        return Ending("invalid", f"rsv {rsv}", frame(rng.choice([TEXT, BINARY]), b"~rsv", rsv=rsv, mask=m))
    if choice == "unmasked":
        return Ending("invalid", "unmasked", frame(rng.choice([TEXT, BINARY]), b"~unmasked", mask=None))
    if choice == "bad-utf8":
        return Ending("invalid", "bad UTF-8", frame(TEXT, _bad_utf8(rng), mask=m), 1007)
    if choice == "bad-utf8-fragmented":
        payload = _bad_utf8(rng)
        cut = rng.randint(1, len(payload) - 1)
        data = frame(TEXT, payload[:cut], fin=False, mask=m) + frame(CONT, payload[cut:], mask=_mask(rng))
        return Ending("invalid", "bad UTF-8 over two fragments", data, 1007)
    if choice == "oversized-ping":
        return Ending("invalid", "ping of 126+ bytes", frame(PING, rng.randbytes(rng.randint(126, 300)), mask=m))
    if choice == "fragmented-ping":
        return Ending("invalid", "fragmented ping", frame(PING, b"~", fin=False, mask=m))
    if choice == "stray-continuation":
        return Ending("invalid", "continuation without a start", frame(CONT, b"~stray", mask=m))
    if choice == "oversized-message":
        size = MAX_MESSAGE_SIZE + rng.randint(1, 4096)
        opcode = rng.choice([TEXT, BINARY])
        payload = _payload(rng, opcode, size)
        while len(payload) <= MAX_MESSAGE_SIZE:
            payload += b"x"
        pieces = _fragments(rng, payload, opcode)
        data = b"".join(frame(op, chunk, fin=fin, mask=_mask(rng)) for op, chunk, fin in pieces)
        return Ending("invalid", f"message of {len(payload)} bytes", data, 1009)
    if choice == "bad-close-code":
        code = rng.choice([0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
        return Ending("invalid", f"close code {code}", frame(CLOSE, struct.pack("!H", code), mask=m))
    opcode = rng.choice([TEXT, BINARY])
    full = frame(opcode, _payload(rng, opcode, rng.randint(10, 70000)), mask=m)
    if choice == "truncated-header":
        header_size = 2 + (8 if full[1] & 0x7F == 127 else 2 if full[1] & 0x7F == 126 else 0) + 4
        return Ending("truncated", "truncated header", full[: rng.randint(1, header_size - 1)])
    return Ending("truncated", "truncated payload", full[: rng.randint(15, len(full) - 1)])


def frame_case(seed: int, index: int) -> FrameCase:
    rng = _rng(seed, index)
    steps: list[Step] = []
    for _ in range(rng.randint(0, 5)):
        roll = rng.random()
        if roll < 0.15:
            ping = _control_payload(rng)
            steps.append(Step(frame(PING, ping, mask=_mask(rng)), None, (ping,)))
        elif roll < 0.22:
            steps.append(Step(frame(PONG, _control_payload(rng), mask=_mask(rng))))
        else:
            opcode = rng.choice([TEXT, BINARY])
            steps.append(_message_step(rng, opcode, _payload(rng, opcode, _size(rng))))
    return FrameCase(index, tuple(steps), _ending(rng))


# --- handshakes -----------------------------------------------------------------------------


def _path(rng: random.Random) -> tuple[str, frozenset[int]]:
    """A request target and the non-4xx statuses its view may answer with (besides 101)."""
    roll = rng.random()
    query = ""
    if rng.random() < 0.3:
        query = "?" + rng.choice(["session=1", "subprotocol=chat", "x=%ff%fe", "a=%E2%82%AC&b=" + "z" * 50, "q=é"])
    # The upgrade view raises (a 500) when the subprotocol it picks was not offered.
    upgrade_statuses = frozenset({500}) if "subprotocol" in query else frozenset()
    if roll < 0.45:
        return "/ws/echo" + query, upgrade_statuses
    if roll < 0.6:
        group = "".join(rng.choice("abcXYZ019-_~.%20") for _ in range(rng.randint(1, 40)))
        return f"/ws/{group}" + query, upgrade_statuses
    if roll < 0.72:
        pieces = [rng.choice(["%ff", "%00", "%2F", "%C3%A9", "%E2%82", "é", "€", "%", "%zz", "ws", "..", "echo"])]
        pieces += [rng.choice(["/", "a", "%2e", ";", "//"]) for _ in range(rng.randint(0, 6))]
        return "/ws/" + "".join(pieces), frozenset()
    # The test views that call send_upgrade() unconditionally fail with a 500 on a request
    # that a mutation turned into plain HTTP; /wstest answers it with its own 500.
    table: list[tuple[str, frozenset[int]]] = [
        ("/reject", frozenset()),
        ("/private", frozenset({302})),
        ("/handled-without-upgrade", frozenset({200, 500})),
        ("/bad-header?name=Upgrade", frozenset({500})),
        ("/bad-header?name=X-Fine&value=ok", frozenset({500})),
        ("/twice", frozenset({500})),
        ("/wstest", frozenset({500})),
        ("/", frozenset({200})),
        ("/admin/", frozenset({302})),
        ("/ws/chat/lobby?nickname=fuzz", frozenset()),
        ("/ws/chat/bad%20room?nickname=x", frozenset()),
        ("/nowhere/" + "x" * rng.randint(0, 3000), frozenset()),
    ]
    return rng.choice(table)


def _garbage(rng: random.Random, size: int) -> bytes:
    """Random bytes without CR or LF (they would end the line)."""
    return bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(size))


def handshake_case(seed: int, index: int, port: int = 0) -> HandshakeCase:
    """One raw upgrade request; ``port`` goes into the Host header."""
    rng = _rng(seed, index)
    path, view_statuses = _path(rng)
    mutations: list[str] = []
    request_line = f"GET {path} HTTP/1.1".encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"Host", f"127.0.0.1:{port}".encode()),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", base64.b64encode(rng.randbytes(16))),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    if rng.random() < 0.3:
        headers.append((b"Origin", rng.choice([b"http://allowed.example", b"http://127.0.0.1", b"http://evil.test"])))
    for _ in range(rng.randint(0, 4)):
        mutation = rng.choice(
            [
                "drop",
                "duplicate",
                "shuffle",
                "name-case",
                "name-garbage",
                "value-garbage",
                "value-empty",
                "extra",
                "request-line",
                "version",
                "origin",
                "protocol",
            ]
        )
        mutations.append(mutation)
        if mutation == "drop" and headers:
            del headers[rng.randrange(len(headers))]
        elif mutation == "duplicate" and headers:
            name, value = rng.choice(headers)
            other = value if rng.random() < 0.5 else _garbage(rng, rng.randint(0, 20))
            headers.insert(rng.randrange(len(headers) + 1), (name, other))
        elif mutation == "shuffle":
            rng.shuffle(headers)
        elif mutation == "name-case" and headers:
            i = rng.randrange(len(headers))
            name, value = headers[i]
            headers[i] = (bytes(c ^ 0x20 if rng.random() < 0.5 and chr(c).isalpha() else c for c in name), value)
        elif mutation == "name-garbage" and headers:
            i = rng.randrange(len(headers))
            name, value = headers[i]
            cut = rng.randint(0, len(name))
            garbage = _garbage(rng, rng.randint(1, 4)).replace(b":", b"")
            headers[i] = (name[:cut] + garbage + name[cut:], value)
        elif mutation == "value-garbage" and headers:
            i = rng.randrange(len(headers))
            headers[i] = (headers[i][0], _garbage(rng, rng.randint(1, 60)))
        elif mutation == "value-empty" and headers:
            i = rng.randrange(len(headers))
            headers[i] = (headers[i][0], b"")
        elif mutation == "extra":
            name = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz-") for _ in range(rng.randint(1, 30)))
            headers.append((b"X-" + name, _garbage(rng, rng.randint(0, 200))))
        elif mutation == "request-line":
            request_line = rng.choice(
                [
                    _garbage(rng, rng.randint(0, 80)),
                    b"GET " + path.encode("utf-8"),
                    b"GET  HTTP/1.1",
                    b"POST " + path.encode("utf-8") + b" HTTP/1.1",
                    b"GET " + path.encode("utf-8") + b" HTTP/1.0",
                    b"GET " + path.encode("utf-8") + b" HTTP/2.0",
                    b"get " + path.encode("utf-8") + b" http/1.1",
                    b"GET /ws/\xff\xfe\x80 HTTP/1.1",
                    b"GET /ws/" + "écho€".encode() + b" HTTP/1.1",
                ]
            )
        elif mutation == "version":
            headers.append((b"Sec-WebSocket-Version", rng.choice([b"8", b"12", b"14", b"13, 8", b"x"])))
        elif mutation == "origin":
            origin = rng.choice([b"null", b"http://[", b"http://[::1", b"file://", b"http://", b"ws://127.0.0.1"])
            headers = [(name, value) for name, value in headers if name != b"Origin"] + [(b"Origin", origin)]
        elif mutation == "protocol":
            headers.append((b"Sec-WebSocket-Protocol", rng.choice([b"chat", b"chat, other", b"", b",,,", b"\xff"])))
    lines = [request_line, *(name + b": " + value for name, value in headers)]
    request = b"\r\n".join(lines) + b"\r\n\r\n"
    return HandshakeCase(index, request, path, tuple(mutations), view_statuses)


def make_case(seed: int, index: int, port: int = 0) -> FrameCase | HandshakeCase:
    """Case ``index`` of the run with ``seed``: about 60% frame cases, 40% handshakes."""
    if _rng(seed, -index - 1).random() < 0.6:
        return frame_case(seed, index)
    return handshake_case(seed, index, port)
