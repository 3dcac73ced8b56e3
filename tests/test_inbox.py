"""Unit tests of wsgroups.inbox.Inbox: batches of operations from other processes applied to
a real Runtime's socket table (LocalSockets with a fake ASGI send), on a fresh event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wsgroups import inbox as inbox_module
from wsgroups import ops
from wsgroups.codes import ConnectionFlags
from wsgroups.ids import make_id
from wsgroups.inbox import Inbox
from wsgroups.outbox import LocalSocket

ACCEPT = {"type": "websocket.accept"}
A, B, C, D = (make_id(77, n) for n in (1, 2, 3, 4))
UNKNOWN = make_id(78, 1)


class Wire:
    """The ASGI sends of several sockets: what each one put on the wire, in order."""

    def __init__(self):
        self.sent = {}

    def send_for(self, socket_id):
        frames = self.sent.setdefault(socket_id, [])

        async def send(message):
            frames.append(dict(message))

        return send

    def after_accept(self, socket_id):
        frames = self.sent[socket_id]
        assert frames[0] == ACCEPT
        return frames[1:]


@pytest.fixture
def wire():
    return Wire()


@pytest.fixture
def sockets(runtime, wire):
    """Four open sockets: A, B and C in "chat", D in "news"."""
    socks = {}
    for socket_id, group in ((A, "chat"), (B, "chat"), (C, "chat"), (D, "news")):
        sock = LocalSocket(
            socket_id,
            "/ws",
            wire.send_for(socket_id),
            runtime.loop,
            limit=100,
            counters=runtime.stats,
            on_overflow=lambda sock: None,
        )
        sock.group = group
        sock.accept(dict(ACCEPT))
        runtime.table.add(sock)
        socks[socket_id] = sock
    return socks


def apply(runtime, batch, reply_to="reply-chan", inbox=None):
    inbox = inbox or Inbox(runtime)
    return runtime.loop.run_until_complete(inbox(batch, reply_to))


def test_send_puts_text_and_binary_frames_on_the_wire(runtime, wire, sockets):
    answers = apply(runtime, [ops.Send(A, "hello"), ops.Send(A, b"\x00\xff"), ops.Send(B, "to b")])
    assert answers == []
    assert wire.after_accept(A) == [
        {"type": "websocket.send", "text": "hello"},
        {"type": "websocket.send", "bytes": b"\x00\xff"},
    ]
    assert wire.after_accept(B) == [{"type": "websocket.send", "text": "to b"}]
    assert wire.after_accept(C) == []
    assert runtime.stats["sends_to_dead"] == 0


def test_send_with_disconnect_after_send_closes_behind_the_frame(runtime, wire, sockets):
    apply(runtime, [ops.Send(A, "bye", ConnectionFlags.DISCONNECT_AFTER_SEND)])
    assert wire.after_accept(A) == [
        {"type": "websocket.send", "text": "bye"},
        {"type": "websocket.close", "code": 1000, "reason": ""},
    ]


def test_send_with_disconnect_immediately_closes_without_the_frame(runtime, wire, sockets):
    apply(runtime, [ops.Send(A, "never", ConnectionFlags.DISCONNECT_IMMEDIATELY)])
    assert wire.after_accept(A) == [{"type": "websocket.close", "code": 1000, "reason": ""}]


def test_send_to_unknown_or_closed_socket_counts_sends_to_dead(runtime, wire, sockets):
    sockets[B].close(1000, "")
    apply(runtime, [ops.Send(UNKNOWN, "x"), ops.Send(B, "late"), ops.Send(A, "ok")])
    assert runtime.stats["sends_to_dead"] == 2
    assert wire.after_accept(B) == [{"type": "websocket.close", "code": 1000, "reason": ""}]
    assert wire.after_accept(A) == [{"type": "websocket.send", "text": "ok"}]


def test_close_sends_the_close_frame_and_ignores_unknown_ids(runtime, wire, sockets):
    answers = apply(runtime, [ops.Close(A, 4001, "kicked"), ops.Close(UNKNOWN, 1000, "")])
    assert answers == []
    assert wire.after_accept(A) == [{"type": "websocket.close", "code": 4001, "reason": "kicked"}]
    assert not sockets[A].is_open
    assert sockets[B].is_open
    assert runtime.stats["sends_to_dead"] == 0


def test_broadcast_reaches_open_members_but_the_excluded_and_answers_the_count(runtime, wire, sockets):
    sockets[C].close(1000, "")
    answers = apply(runtime, [ops.Broadcast("chat", "all", [B], 31), ops.Broadcast("empty", "x", [], 32)])
    assert answers == [[31, 1], [32, 0]]
    assert wire.after_accept(A) == [{"type": "websocket.send", "text": "all"}]
    assert wire.after_accept(B) == []
    assert wire.after_accept(C) == [{"type": "websocket.close", "code": 1000, "reason": ""}]
    assert wire.after_accept(D) == []


def test_group_close_closes_the_group_and_answers_the_count(runtime, wire, sockets):
    answers = apply(runtime, [ops.GroupClose("chat", 1001, "moving", 5)])
    assert answers == [[5, 3]]
    for socket_id in (A, B, C):
        assert wire.after_accept(socket_id) == [{"type": "websocket.close", "code": 1001, "reason": "moving"}]
    assert wire.after_accept(D) == []
    assert sockets[D].is_open


def test_alive_answers_the_open_ids_among_those_asked(runtime, sockets):
    sockets[B].close(1000, "")
    answers = apply(runtime, [ops.Alive([A, B, D, UNKNOWN], 7)])
    assert answers == [[7, [A, D]]]


def test_members_answers_the_open_sockets_of_a_group(runtime, sockets):
    sockets[A].close(1000, "")
    answers = apply(runtime, [ops.Members("chat", 1), ops.Members("news", 2), ops.Members("nobody", 3)])
    assert answers[0][0] == 1 and sorted(answers[0][1]) == [B, C]
    assert answers[1:] == [[2, [D]], [3, []]]


def test_a_batch_is_applied_in_order(runtime, wire, sockets):
    answers = apply(
        runtime,
        [
            ops.Send(A, "first"),
            ops.Alive([A], 1),
            ops.Close(A, 1000, "done"),
            ops.Send(A, "too late"),
            ops.Alive([A], 2),
        ],
    )
    assert answers == [[1, [A]], [2, []]]
    assert wire.after_accept(A) == [
        {"type": "websocket.send", "text": "first"},
        {"type": "websocket.close", "code": 1000, "reason": "done"},
    ]
    assert runtime.stats["sends_to_dead"] == 1


def test_handle_starts_handle_for_server_in_a_task(runtime, monkeypatch):
    started = []

    async def fake_handle_for_server(rt, op, reply_to):
        await asyncio.sleep(0)
        started.append((rt, op, reply_to))

    monkeypatch.setattr(inbox_module, "handle_for_server", fake_handle_for_server)
    inbox = Inbox(runtime)
    op = ops.Handle("chat", "text", A, "hi", "sk", 44)

    async def body():
        answers = await inbox([op], "server-chan")
        assert started == []  # started, not awaited: the answer comes later as a Reply
        assert len(inbox._handler_tasks) == 1
        for _ in range(5):
            await asyncio.sleep(0)
        return answers

    answers = runtime.loop.run_until_complete(body())
    assert answers == []
    assert started == [(runtime, op, "server-chan")]
    assert inbox._handler_tasks == set()


def test_an_op_that_cannot_be_applied_is_logged(runtime, wslog, sockets):
    answers = apply(runtime, [ops.Reply(3, True), ops.Alive([A], 4)])
    assert answers == [[4, [A]]]
    errors = [r for r in wslog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "cannot apply" in errors[0].getMessage()


def test_room_ops_join_leave_and_answer_from_the_room_table(runtime, wire, sockets):
    sockets[C].close(1000, "")
    answers = apply(
        runtime,
        [
            ops.Join(A, "x", {"nick": "a"}, 41),
            ops.Join(B, "x", None, 42),
            ops.Join(C, "x", None, 43),  # closing: cannot join
            ops.Join(UNKNOWN, "x", None, 44),
            ops.Join(A, "y", None, 45),
            ops.Rooms(A, 46),
            ops.RoomPresence("x", 47),
            ops.RoomBroadcast("x", "hi", [B], 48),
            ops.Leave(B, "x", 49),
            ops.Leave(B, "x", 50),
            ops.RoomMembers("x", 51),
            ops.RoomCounts(52),
            ops.RoomClose("y", 4010, "room closed", 53),
        ],
    )
    assert answers == [
        [41, True],
        [42, True],
        [43, False],
        [44, False],
        [45, True],
        [46, ["x", "y"]],
        [47, [[A, {"nick": "a"}], [B, None]]],
        [48, 1],
        [49, True],
        [50, False],
        [51, [A]],
        [52, [["x", 1], ["y", 1]]],
        [53, 1],
    ]
    assert wire.after_accept(A) == [
        {"type": "websocket.send", "text": "hi"},
        {"type": "websocket.close", "code": 4010, "reason": "room closed"},
    ]
    assert wire.after_accept(B) == []
