"""The outbox of a socket (wsgroups.outbox): order, back-pressure, holds, closes, overflow.

The server's ASGI ``send`` is a fake: it finishes at once, or, while ``blocked``, waits on
a future of its own until :meth:`FakeServer.release` (as a server whose write buffer is
full does). Each test runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import threading
import time

from django.test import override_settings

from wsgroups.codes import CloseCode, ConnectionFlags
from wsgroups.outbox import LocalSocket, SocketState

ACCEPT = {"type": "websocket.accept", "subprotocol": None, "headers": []}
OVERFLOW_REASON = "outgoing buffer full: client too slow"


def text(n):
    return {"type": "websocket.send", "text": f"m{n}"}


class FakeServer:
    """An ASGI ``send``: records each message when the call starts and when it finishes."""

    def __init__(self):
        self.started = []
        self.sent = []
        self.blocked = False
        self.fail_on = None  # a message whose send raises this exception instead
        self.error = ConnectionResetError("peer gone")
        self.waiters = []

    async def send(self, message):
        self.started.append(message)
        if self.fail_on is not None and message == self.fail_on:
            raise self.error
        if self.blocked:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter
        self.sent.append(message)

    def release(self, error=None):
        self.blocked = False
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    def texts(self):
        return [m.get("text") for m in self.sent if m["type"] == "websocket.send"]


def make_socket(server, *, limit=100, counters=None, overflows=None):
    return LocalSocket(
        42,
        "/ws",
        server.send,
        asyncio.get_running_loop(),
        limit=limit,
        counters={"frames_out": 0} if counters is None else counters,
        on_overflow=(overflows.append if overflows is not None else lambda sock: None),
        remote_addr="10.0.0.1",
    )


async def settle(rounds=20):
    for _ in range(rounds):
        await asyncio.sleep(0)


# --- order and back-pressure ---------------------------------------------------------


def test_new_socket_is_connecting_and_takes_no_frames():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        assert sock.state is SocketState.CONNECTING and not sock.is_open
        assert sock.send(text(1)) is False
        sock.enqueue(text(2))
        sock.close(1000, "")
        await settle()
        assert server.started == [] and len(sock.outbox) == 0
        assert sock.state is SocketState.CONNECTING

    asyncio.run(main())


def test_frames_leave_in_order_without_waiting_for_the_loop():
    async def main():
        server = FakeServer()
        counters = {"frames_out": 0}
        sock = make_socket(server, counters=counters)
        sock.accept(ACCEPT)
        assert sock.is_open and sock.opened_at is not None
        for n in range(5):
            assert sock.send(text(n)) is True
        # A send that does not wait is finished before send() returns: no task, no loop turn.
        assert server.sent == [ACCEPT, *(text(n) for n in range(5))]
        assert counters["frames_out"] == 5
        assert len(sock.outbox) == 0

    asyncio.run(main())


def test_a_blocked_send_makes_later_frames_wait_then_continue_in_order():
    async def main():
        server = FakeServer()
        counters = {"frames_out": 0}
        sock = make_socket(server, counters=counters)
        sock.accept(ACCEPT)
        server.blocked = True
        sock.send(text(0))
        for n in range(1, 5):
            sock.send(text(n))
        await settle()
        # Only the first frame reached the server; the rest wait in the outbox.
        assert server.started == [ACCEPT, text(0)]
        assert server.sent == [ACCEPT]
        assert list(sock.outbox) == [text(n) for n in range(1, 5)]
        assert counters["frames_out"] == 1
        server.release()
        await settle()
        assert server.sent == [ACCEPT, *(text(n) for n in range(5))]
        assert server.started == server.sent
        assert len(sock.outbox) == 0
        assert counters["frames_out"] == 5
        # Back to sending without a task once the server keeps up again.
        sock.send(text(5))
        assert server.sent[-1] == text(5)

    asyncio.run(main())


def test_a_send_blocked_several_times_in_a_row_keeps_the_order():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        for n in range(6):
            server.blocked = n % 2 == 0
            sock.send(text(n))
            if n % 3 == 2:
                server.release()
                await settle(3)
        await settle()
        server.release()
        await settle()
        assert server.texts() == [f"m{n}" for n in range(6)]

    asyncio.run(main())


def test_a_send_that_yields_to_the_loop_keeps_the_order():
    """A server ``send`` that yields without a future (``await asyncio.sleep(0)``)."""

    async def main():
        sent = []

        async def send(message):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            sent.append(message)

        sock = LocalSocket(
            1, "/ws", send, asyncio.get_running_loop(), limit=10, counters={"frames_out": 0}, on_overflow=print
        )
        sock.accept(ACCEPT)
        for n in range(4):
            sock.send(text(n))
        assert sent == []
        await settle()
        assert sent == [ACCEPT, *(text(n) for n in range(4))]

    asyncio.run(main())


# --- accept and hold -----------------------------------------------------------------


def test_accept_puts_the_101_first():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT, held=True)
        sock.send(text(1))
        sock.send(text(2))
        assert list(sock.outbox) == [ACCEPT, text(1), text(2)]
        sock.release()
        assert server.sent == [ACCEPT, text(1), text(2)]

    asyncio.run(main())


def test_a_held_socket_sends_nothing_until_release():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT, held=True)
        assert sock.is_open and sock.held
        for n in range(3):
            assert sock.send(text(n)) is True
        await settle()
        assert server.started == []
        assert len(sock.outbox) == 4
        sock.release()
        assert not sock.held
        await settle()
        assert server.sent == [ACCEPT, text(0), text(1), text(2)]

    asyncio.run(main())


def test_a_close_while_held_follows_the_held_frames():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT, held=True)
        sock.send(text(0))
        sock.close(CloseCode.GOING_AWAY, "bye")
        assert server.started == []
        sock.release()
        await settle()
        assert server.sent == [ACCEPT, text(0), {"type": "websocket.close", "code": 1001, "reason": "bye"}]

    asyncio.run(main())


# --- close -----------------------------------------------------------------------------


def test_close_queues_the_close_frame_after_the_queued_frames_and_nothing_after_it():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        server.blocked = True
        sock.send(text(0))
        sock.send(text(1))
        sock.close(CloseCode.POLICY_VIOLATED, "stop")
        assert sock.state is SocketState.CLOSING
        assert (sock.close_code, sock.close_reason) == (1008, "stop")
        # Nothing is taken once the close is queued.
        assert sock.send(text(2)) is False
        sock.enqueue(text(3))
        sock.close(1000, "again")
        assert list(sock.outbox) == [text(1), {"type": "websocket.close", "code": 1008, "reason": "stop"}]
        server.release()
        await settle()
        assert server.sent == [ACCEPT, text(0), text(1), {"type": "websocket.close", "code": 1008, "reason": "stop"}]
        assert sock.send(text(4)) is False
        await settle()
        assert server.sent[-1]["type"] == "websocket.close"
        assert len(sock.outbox) == 0

    asyncio.run(main())


def test_close_code_is_sent_as_a_plain_int():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        sock.close(CloseCode.TRY_AGAIN_LATER, "later")
        close = server.sent[-1]
        assert close == {"type": "websocket.close", "code": 1013, "reason": "later"}
        assert type(close["code"]) is int
        assert type(sock.close_code) is int

    asyncio.run(main())


def test_disconnect_after_send_sends_the_frame_then_closes():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        assert sock.send(text(1), ConnectionFlags.DISCONNECT_AFTER_SEND) is True
        assert server.sent == [ACCEPT, text(1), {"type": "websocket.close", "code": 1000, "reason": ""}]
        assert sock.state is SocketState.CLOSING
        assert sock.send(text(2)) is False

    asyncio.run(main())


def test_disconnect_immediately_closes_without_the_frame_but_after_queued_ones():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        server.blocked = True
        sock.send(text(0))
        sock.send(text(1))
        assert sock.send(text(2), ConnectionFlags.DISCONNECT_IMMEDIATELY) is True
        server.release()
        await settle()
        assert server.sent == [ACCEPT, text(0), text(1), {"type": "websocket.close", "code": 1000, "reason": ""}]
        assert sock.close_code == CloseCode.NORMAL

    asyncio.run(main())


def test_disconnect_immediately_wins_over_disconnect_after_send():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        flags = ConnectionFlags.DISCONNECT_AFTER_SEND | ConnectionFlags.DISCONNECT_IMMEDIATELY
        assert sock.send(text(1), flags) is True
        assert server.sent == [ACCEPT, {"type": "websocket.close", "code": 1000, "reason": ""}]

    asyncio.run(main())


# --- overflow --------------------------------------------------------------------------


def test_overflow_at_the_limit_closes_with_1013_once():
    async def main():
        server = FakeServer()
        overflows = []
        counters = {"frames_out": 0}
        sock = make_socket(server, limit=3, counters=counters, overflows=overflows)
        sock.accept(ACCEPT)
        server.blocked = True
        sock.send(text(0))  # in the server's hands
        for n in range(1, 4):
            sock.send(text(n))  # fills the outbox to its limit
        assert len(sock.outbox) == 3 and overflows == []
        assert sock.is_open
        sock.send(text(4))  # one too many
        assert overflows == [sock]
        assert sock.state is SocketState.CLOSING
        assert (sock.close_code, sock.close_reason) == (1013, OVERFLOW_REASON)
        assert len(sock.outbox) == 0
        # Later sends are refused and do not report the overflow again.
        assert sock.send(text(5)) is False
        sock.enqueue(text(6))
        assert overflows == [sock]
        server.release()
        await settle()
        close = {"type": "websocket.close", "code": 1013, "reason": OVERFLOW_REASON}
        assert server.started[-1] == close
        assert close in server.sent
        # The dropped frames never reached the server.
        assert [m.get("text") for m in server.started if m["type"] == "websocket.send"] == ["m0"]
        assert counters["frames_out"] == 1  # m0 went through the outbox (the 101 and the close are not messages)

    with override_settings(WSGROUPS={"CLOSE_TIMEOUT": 0.05}):
        asyncio.run(main())


def test_overflow_closes_even_when_the_server_never_writes_again():
    """The close frame cannot be written either: after CLOSE_TIMEOUT twice the app task is cancelled."""

    async def main():
        server = FakeServer()
        overflows = []
        sock = make_socket(server, limit=2, overflows=overflows)
        sock.app_task = asyncio.get_running_loop().create_task(asyncio.sleep(30))
        sock.accept(ACCEPT)
        server.blocked = True
        for n in range(4):
            sock.send(text(n))
        assert overflows == [sock]
        overflowed = time.monotonic()
        await asyncio.sleep(0.02)
        # The close frame was handed to the server even though it does not write.
        assert server.started[-1] == {"type": "websocket.close", "code": 1013, "reason": OVERFLOW_REASON}
        assert not sock.app_task.done() and not sock.abandoned
        for _ in range(100):
            if sock.abandoned:
                break
            await asyncio.sleep(0.01)
        assert time.monotonic() - overflowed >= 0.1  # CLOSE_TIMEOUT for the close frame, then for the client
        assert sock.abandoned is True
        await asyncio.sleep(0)
        assert sock.app_task.cancelled()
        server.release()

    with override_settings(WSGROUPS={"CLOSE_TIMEOUT": 0.05}):
        asyncio.run(main())


def test_overflow_does_not_abandon_a_socket_whose_close_was_reported():
    async def main():
        server = FakeServer()
        sock = make_socket(server, limit=1)
        sock.app_task = asyncio.get_running_loop().create_task(asyncio.sleep(30))
        sock.accept(ACCEPT)
        server.blocked = True
        for n in range(3):
            sock.send(text(n))
        assert sock.state is SocketState.CLOSING
        server.release()
        await settle()
        sock.closed.set()  # the server reported the end of the connection
        await asyncio.sleep(0.15)
        assert sock.abandoned is False
        assert not sock.app_task.done()
        sock.app_task.cancel()

    with override_settings(WSGROUPS={"CLOSE_TIMEOUT": 0.05}):
        asyncio.run(main())


def test_a_held_socket_below_its_limit_does_not_overflow():
    async def main():
        server = FakeServer()
        overflows = []
        sock = make_socket(server, limit=3, overflows=overflows)
        sock.accept(ACCEPT, held=True)  # the 101 is not counted against the limit
        sock.send(text(0))
        sock.send(text(1))
        assert overflows == [] and sock.is_open
        sock.release()
        assert server.sent == [ACCEPT, text(0), text(1)]

    asyncio.run(main())


# --- other threads --------------------------------------------------------------------


def test_send_threadsafe_and_close_threadsafe_from_another_thread():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        results = {}

        def worker():
            results["thread"] = threading.get_ident()
            results["on_loop"] = sock.on_loop()
            results["sends"] = [sock.send_threadsafe(text(n), 0) for n in range(20)]
            results["close"] = sock.close_threadsafe(CloseCode.GOING_AWAY, "done")
            # The loop has not run the close yet: the socket still looks open from here,
            # but the frame is queued behind the close and dropped there.
            results["late"] = sock.send_threadsafe(text(99), 0)

        await asyncio.get_running_loop().run_in_executor(None, worker)
        await settle()
        assert results["thread"] != threading.get_ident()
        assert results["on_loop"] is False
        assert results["sends"] == [True] * 20
        assert results["close"] is True
        assert server.sent == [
            ACCEPT,
            *(text(n) for n in range(20)),
            {"type": "websocket.close", "code": 1001, "reason": "done"},
        ]
        assert "m99" not in server.texts()
        # Once closed, the thread-safe calls say so.
        assert await asyncio.get_running_loop().run_in_executor(None, sock.send_threadsafe, text(100), 0) is False
        assert await asyncio.get_running_loop().run_in_executor(None, sock.close_threadsafe, 1000, "") is False

    asyncio.run(main())


def test_threadsafe_calls_on_the_loop_act_at_once():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        assert sock.on_loop() is True
        assert sock.send_threadsafe(text(0), 0) is False  # not open yet
        sock.accept(ACCEPT)
        assert sock.send_threadsafe(text(1), 0) is True
        assert server.sent == [ACCEPT, text(1)]
        assert sock.close_threadsafe(1000, "") is True
        assert sock.state is SocketState.CLOSING
        assert sock.close_threadsafe(1000, "") is False
        assert sock.send_threadsafe(text(2), 0) is False

    asyncio.run(main())


def test_on_loop_is_false_outside_any_loop():
    loop = asyncio.new_event_loop()
    try:
        sock = LocalSocket(1, "/ws", FakeServer().send, loop, limit=1, counters={"frames_out": 0}, on_overflow=print)
        assert sock.on_loop() is False
        assert repr(sock) == "<LocalSocket 1 '' connecting>"
    finally:
        loop.close()


# --- failing sends -------------------------------------------------------------------


def test_a_send_that_raises_at_once_clears_the_outbox():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT, held=True)
        for n in range(4):
            sock.send(text(n))
        server.fail_on = text(1)
        sock.release()
        assert server.started == [ACCEPT, text(0), text(1)]
        assert server.sent == [ACCEPT, text(0)]
        assert len(sock.outbox) == 0
        # The socket is not wedged: a later frame is handed to the server again.
        sock.send(text(5))
        assert server.started[-1] == text(5)

    asyncio.run(main())


def test_a_send_that_raises_after_waiting_clears_the_outbox():
    async def main():
        server = FakeServer()
        sock = make_socket(server)
        sock.accept(ACCEPT)
        server.blocked = True
        for n in range(4):
            sock.send(text(n))
        assert len(sock.outbox) == 3
        server.release(error=ConnectionResetError("peer gone"))
        await settle()
        assert server.sent == [ACCEPT]
        assert server.started == [ACCEPT, text(0)]
        assert len(sock.outbox) == 0
        sock.send(text(9))
        await settle()
        assert server.sent[-1] == text(9)

    asyncio.run(main())
