"""Hostile handshakes and frames over raw TCP against real daphne and uvicorn processes.

Each case checks the answer RFC 6455 requires (a 4xx refusal before the upgrade, a close
frame with 1002 or 1007 after it), that the disconnect handler of an opened socket runs
exactly once, and that the server process survives and still serves a normal client.

A refused handshake is sent to ``/ws/echo``, whose view would upgrade it into the ``echo``
group (whose disconnect handler records an event). Socket IDs of one process increase, so
a socket that the refused request opened by mistake would have an ID between those of two
normal sockets opened just before and just after it: the checks look for registry rows and
disconnect events in that range.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from .conftest import Server, run_ctl
from .wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    CloseOutcome,
    RawResponse,
    build_frame,
    close_payload,
    handshake_request,
    raw_handshake,
    read_close,
    read_frame,
    send_raw_request,
    websocket_headers,
)

pytestmark = pytest.mark.e2e

TIMEOUT = 10


# --- helpers -----------------------------------------------------------------------------


def _echo_id(server: Server) -> int:
    """Open a normal client on ``/ws/echo``, check it echoes, close it; return its ID."""

    async def scenario() -> int:
        async with connect(f"{server.url}/ws/echo", open_timeout=TIMEOUT) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            await ws.send("still serving")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "still serving"
            return int(hello["id"])

    return asyncio.run(scenario())


def _disconnects(server: Server, socket_id: int, timeout: float = TIMEOUT) -> int:
    server.wait_for_events(lambda rows: any(r["event"] == "disconnect" and r["id"] == socket_id for r in rows), timeout)
    time.sleep(0.3)  # a second, wrong call would land here
    return sum(1 for row in server.events("disconnect") if row["id"] == socket_id)


def _assert_alive(server: Server) -> int:
    """The process runs and a normal client still connects and echoes; return that client's ID."""
    assert server.process.poll() is None, f"{server.kind} exited:\n{server.log()[-3000:]}"
    socket_id = _echo_id(server)
    assert server.process.poll() is None, f"{server.kind} exited:\n{server.log()[-3000:]}"
    return socket_id


@contextlib.contextmanager
def _nothing_opened(server: Server, base_env: dict[str, str]) -> Iterator[None]:
    """Around a refused handshake: no socket opened, no registry row, no handler ran."""
    before = _assert_alive(server)
    yield
    after = _assert_alive(server)
    assert _disconnects(server, after) == 1
    stray_events = [row for row in server.events() if before < int(row.get("id") or 0) < after]
    assert stray_events == [], "a handler ran for the refused handshake"
    registry = run_ctl(base_env, "registry-between", str(before), str(after))
    assert registry["high_written"], "the registry row of the normal client after the case never appeared"
    assert registry["rows"] == [], "the refused handshake left a registry row"


def _refusal(server: Server, headers: list[tuple[str, str]]) -> RawResponse | None:
    response = send_raw_request(server.port, handshake_request(server.port, "/ws/echo", headers), TIMEOUT)
    if response is not None:
        response.close()
    return response


def _opened(server: Server) -> tuple[RawResponse, bytearray, int]:
    """A raw socket upgraded on ``/ws/echo``, the bytes after the 101, and the socket's ID."""
    response = raw_handshake(server.port, "/ws/echo", timeout=TIMEOUT)
    assert response.status == 101, response.status_line
    buffer = bytearray(response.body)
    opcode, payload = read_frame(response.sock, TIMEOUT, buffer)
    assert opcode == OP_TEXT
    return response, buffer, int(json.loads(payload)["id"])


def _hit(server: Server, hostile: bytes) -> tuple[CloseOutcome, int]:
    """Send ``hostile`` after the upgrade; return how the server ended the connection."""
    response, buffer, socket_id = _opened(server)
    try:
        response.sock.sendall(hostile)
        outcome = read_close(response.sock, TIMEOUT, buffer)
    finally:
        response.close()
    return outcome, socket_id


def _assert_closed_with(server: Server, hostile: bytes, code: int) -> None:
    outcome, socket_id = _hit(server, hostile)
    assert not outcome.dropped, f"{server.kind} dropped TCP without a close frame"
    assert outcome.code == code, f"{server.kind} closed with {outcome.code} {outcome.reason!r}"
    outcome.reason.decode("utf-8")  # a server's close reason is valid UTF-8 itself
    assert all(frame.opcode in (OP_PING, OP_PONG) for frame in outcome.frames_before), outcome.frames_before
    assert _disconnects(server, socket_id) == 1
    _assert_alive(server)


# --- refused handshakes ------------------------------------------------------------------

BAD_KEYS = {
    "missing": None,
    "not-base64": "not a websocket key!",
    "base64-of-8-bytes": "AAECAwQFBgc=",
    "base64-of-17-bytes": "AAECAwQFBgcICQoLDA0ODxA=",
    "24-chars-not-base64": "@@@@@@@@@@@@@@@@@@@@@@==",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_bad_sec_websocket_key_is_refused_with_400(server: Server, base_env: dict[str, str], key: str | None) -> None:
    with _nothing_opened(server, base_env):
        response = _refusal(server, websocket_headers(key=key))
        assert response is not None, "the connection closed without an answer"
        assert response.status == 400, (response.status_line, response.headers, response.body)


# RFC 6455 4.2.2 and 4.4: an unsupported version is refused (426 Upgrade Required is the
# suggested status) with a Sec-WebSocket-Version header listing the versions served: 13.
# Neither server program does that by itself (autobahn also serves version 8 and answers
# others with 400; the websockets library answers 400): the adapters in wsgroups.servers do.
VERSION_ANSWERS = {(kind, version): (426, ["13"]) for kind in ("daphne", "uvicorn") for version in ("8", "99", "abc")}


@pytest.mark.parametrize("version", ["8", "99", "abc"])
def test_unsupported_sec_websocket_version_is_refused(server: Server, base_env: dict[str, str], version: str) -> None:
    with _nothing_opened(server, base_env):
        response = _refusal(server, websocket_headers(version=version))
        assert response is not None, "the connection closed without an answer"
        status, advertised = VERSION_ANSWERS[server.kind, version]
        assert (response.status, response.header("Sec-WebSocket-Version")) == (status, advertised), (
            response.status_line,
            response.headers,
            response.body,
        )


OVERSIZED = {
    "one-64KiB-header": [("X-Hostile", "a" * 65536)],
    "1000-headers": [(f"X-Hostile-{i:04d}", "a") for i in range(1000)],
    "100-headers-of-1KiB": [(f"X-Hostile-{i:03d}", "b" * 1024) for i in range(100)],
}


@pytest.mark.parametrize("extra", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_oversized_request_headers_are_refused(
    server: Server, base_env: dict[str, str], extra: list[tuple[str, str]]
) -> None:
    with _nothing_opened(server, base_env):
        response = _refusal(server, websocket_headers(extra=extra))
        # Refused: 431 or 400, or the connection closed without an answer; never a 101.
        if response is not None:
            assert response.status in (400, 431), (response.status_line, response.headers, response.body[:200])


# --- protocol errors after the upgrade ---------------------------------------------------

PROTOCOL_ERRORS = {
    "unmasked-frame": build_frame(OP_TEXT, b"hello", mask=False),
    "rsv1": build_frame(OP_TEXT, b"hello", rsv1=True),
    "rsv2": build_frame(OP_TEXT, b"hello", rsv2=True),
    "rsv3": build_frame(OP_TEXT, b"hello", rsv3=True),
    **{f"opcode-{op:#x}": build_frame(op, b"hello") for op in (*range(0x3, 0x8), *range(0xB, 0x10))},
    "fragmented-ping": build_frame(OP_PING, b"ping", fin=False),
    "ping-over-125": build_frame(OP_PING, b"p" * 126),
    "close-over-125": build_frame(OP_CLOSE, close_payload(1000, b"r" * 124)),
    "close-one-byte": build_frame(OP_CLOSE, b"\x03"),
    "continuation-first": build_frame(OP_CONT, b"hello"),
    "text-inside-fragmented-binary": build_frame(OP_BINARY, b"part", fin=False) + build_frame(OP_TEXT, b"x"),
    **{
        f"close-code-{code}": build_frame(OP_CLOSE, close_payload(code))
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000)
    },
}


@pytest.mark.parametrize("hostile", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_protocol_error_closes_1002_and_disconnects_once(server: Server, hostile: bytes) -> None:
    _assert_closed_with(server, hostile, 1002)


# A 64-bit length with the most significant bit set is a protocol error (RFC 6455 5.2).
# uvicorn: websockets (Frame.parse in websockets/frames.py) never checks that bit; it
# compares the length with its max_size (uvicorn's --ws-max-size) first and closes with
# 1009, before the ASGI app sees anything: asserted as what uvicorn does.
DECLARED_LENGTHS = {
    "length-msb-set": (build_frame(OP_BINARY, b"abc", length=1 << 63), {"daphne": 1002, "uvicorn": 1009}),
    # A frame announcing 1 GiB: refused at once, without waiting for (or buffering) its payload.
    "length-1GiB-unsent": (build_frame(OP_BINARY, b"abc", length=1 << 30), {"daphne": 1009, "uvicorn": 1009}),
    # Just over MAX_MESSAGE_SIZE (64 KiB in the test settings), far below the servers' own
    # limits: the adapters make the servers refuse it from its header too.
    "length-over-MAX_MESSAGE_SIZE-unsent": (
        build_frame(OP_BINARY, b"abc", length=70_000),
        {"daphne": 1009, "uvicorn": 1009},
    ),
}


@pytest.mark.parametrize("case", DECLARED_LENGTHS.keys())
def test_declared_frame_length_is_checked_before_the_payload(server: Server, case: str) -> None:
    hostile, codes = DECLARED_LENGTHS[case]
    _assert_closed_with(server, hostile, codes[server.kind])


INVALID_UTF8 = {
    "text-frame": build_frame(OP_TEXT, b"ok \xff\xfe"),
    "text-fragments": build_frame(OP_TEXT, b"ok \xe2\x82", fin=False) + build_frame(OP_CONT, b"\x28"),
    "close-reason": build_frame(OP_CLOSE, close_payload(1000, b"bye \xc3\x28")),
}


@pytest.mark.parametrize("hostile", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
def test_invalid_utf8_closes_1007_and_disconnects_once(server: Server, hostile: bytes) -> None:
    _assert_closed_with(server, hostile, 1007)


@pytest.mark.parametrize(
    "extra",
    [[("Sec-WebSocket-Protocol", "chat\xff")], [("X-N\xe4me", "v")]],
    ids=["non-ascii-subprotocol", "non-ascii-header-name"],
)
def test_non_ascii_handshake_parts_are_a_plain_refusal(server: Server, base_env: dict[str, str], extra) -> None:
    with _nothing_opened(server, base_env):
        response = send_raw_request(
            server.port, handshake_request(server.port, "/ws/echo", websocket_headers(extra=extra))
        )
        assert response is not None, "the connection closed without an answer"
        assert 400 <= response.status < 500, response.status_line
        assert b"codec" not in response.body and "codec" not in response.status_line  # no exception text
