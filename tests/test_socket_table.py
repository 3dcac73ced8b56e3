"""The sockets of one process (wsgroups.socket_table): lookups, group operations, counters.

The sockets' server ``send`` finishes at once, so everything here runs synchronously; the
event loop the sockets belong to is created but never run.
"""

from __future__ import annotations

import asyncio

import pytest

from wsgroups.codes import CloseCode
from wsgroups.outbox import LocalSocket, SocketState
from wsgroups.socket_table import SocketTable, frame

ACCEPT = {"type": "websocket.accept"}


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def counters():
    return {"opened": 0, "closed": 0}


@pytest.fixture
def table(counters):
    return SocketTable(counters)


class Wire:
    """What one socket's server was handed, the 101 left out."""

    def __init__(self):
        self.messages = []

    async def send(self, message):
        if message["type"] != "websocket.accept":
            self.messages.append(message)


WIRES: dict[int, Wire] = {}


@pytest.fixture(autouse=True)
def _fresh_wires():
    WIRES.clear()
    yield
    WIRES.clear()


def make(loop, socket_id, group="chat", session_key=None, *, state="open", held=False):
    """A socket in ``state`` ("connecting", "open" or "closing"); its wire is ``WIRES[socket_id]``."""
    wire = WIRES[socket_id] = Wire()
    sock = LocalSocket(
        socket_id, "/ws", wire.send, loop, limit=10, counters={"frames_out": 0}, on_overflow=lambda sock: None
    )
    sock.group = group
    sock.session_key = session_key
    if state in ("open", "closing"):
        sock.accept(ACCEPT, held=held)
    if state == "closing":
        sock.close(CloseCode.NORMAL, "")
        wire.messages.clear()
    return sock


def texts(socket_id):
    return [m.get("text", m.get("bytes")) for m in WIRES[socket_id].messages if m["type"] == "websocket.send"]


def closes(socket_id):
    return [(m["code"], m["reason"]) for m in WIRES[socket_id].messages if m["type"] == "websocket.close"]


# --- frame ------------------------------------------------------------------------------


def test_frame_text_and_binary():
    assert frame("hi") == {"type": "websocket.send", "text": "hi"}
    assert frame(b"hi") == {"type": "websocket.send", "bytes": b"hi"}
    assert frame("") == {"type": "websocket.send", "text": ""}
    assert frame(b"") == {"type": "websocket.send", "bytes": b""}


# --- add, remove, lookups -----------------------------------------------------------


def test_add_and_remove_keep_every_index_and_the_counters(loop, table, counters):
    a = make(loop, 1, "chat", "s1")
    b = make(loop, 2, "chat")
    c = make(loop, 3, "news", "s3")
    for sock in (a, b, c):
        table.add(sock)
    assert len(table) == 3
    assert counters == {"opened": 3, "closed": 0}
    assert table.get(2) is b and table.get(99) is None
    assert table.group_size("chat") == 2 and table.group_size("news") == 1 and table.group_size("none") == 0
    assert table.by_session == {"s1": 1, "s3": 3}

    assert table.remove(a) is True
    assert table.get(1) is None and len(table) == 2
    assert table.group_size("chat") == 1
    assert "s1" not in table.by_session
    assert counters == {"opened": 3, "closed": 1}

    assert table.remove(c) is True
    assert "news" not in table.by_group  # an empty group is forgotten
    assert table.by_session == {}


def test_remove_twice_returns_false_and_counts_once(loop, table, counters):
    sock = make(loop, 1)
    table.add(sock)
    assert table.remove(sock) is True
    assert table.remove(sock) is False
    assert counters == {"opened": 1, "closed": 1}


def test_remove_of_a_socket_never_added_returns_false(loop, table, counters):
    table.add(make(loop, 1))
    assert table.remove(make(loop, 2)) is False
    assert len(table) == 1 and counters["closed"] == 0


def test_by_session_follows_the_most_recently_active_socket(loop, table):
    first = make(loop, 1, session_key="s")
    second = make(loop, 2, session_key="s")
    table.add(first)
    table.add(second)
    assert table.by_session["s"] == 2  # the newest socket is the most recent
    table.touch_session(first)
    assert table.by_session["s"] == 1
    # Removing a socket that is not the session's latest leaves the entry alone.
    table.remove(second)
    assert table.by_session["s"] == 1
    table.remove(first)
    assert "s" not in table.by_session


def test_touch_session_without_a_session_changes_nothing(loop, table):
    sock = make(loop, 1, session_key=None)
    table.add(sock)
    table.touch_session(sock)
    assert table.by_session == {}


# --- members and open IDs -----------------------------------------------------------


def test_members_are_only_the_open_sockets_of_the_group(loop, table):
    socks = [
        make(loop, 1, "chat"),
        make(loop, 2, "chat", state="connecting"),
        make(loop, 3, "chat", state="closing"),
        make(loop, 4, "chat", held=True),  # held sockets are open: frames wait for the release
        make(loop, 5, "news"),
    ]
    for sock in socks:
        table.add(sock)
    assert [s.id for s in table.members("chat")] == [1, 4]
    assert table.member_ids("chat") == [1, 4]
    assert table.member_ids("news") == [5]
    assert table.member_ids("nobody") == []
    assert table.group_size("chat") == 4  # closing and connecting sockets still count for the limit


def test_open_ids_keeps_the_order_and_drops_the_rest(loop, table):
    table.add(make(loop, 1))
    table.add(make(loop, 2, state="closing"))
    table.add(make(loop, 3, state="connecting"))
    table.add(make(loop, 4))
    assert table.open_ids([4, 2, 99, 1, 3]) == [4, 1]
    assert table.open_ids(iter([1])) == [1]
    assert table.open_ids([]) == []


# --- broadcast -------------------------------------------------------------------------


def test_broadcast_queues_the_frame_for_every_open_member_but_the_excluded(loop, table):
    for sock in (
        make(loop, 1),
        make(loop, 2),
        make(loop, 3),
        make(loop, 4, state="closing"),
        make(loop, 5, state="connecting"),
        make(loop, 6, "other"),
    ):
        table.add(sock)
    assert table.broadcast("chat", "hello", excluded=[2]) == 2
    assert texts(1) == ["hello"] and texts(3) == ["hello"]
    assert texts(2) == [] and texts(4) == [] and texts(5) == [] and texts(6) == []
    assert table.broadcast("chat", b"\x01\x02") == 3
    assert texts(2) == [b"\x01\x02"]
    assert WIRES[2].messages == [{"type": "websocket.send", "bytes": b"\x01\x02"}]
    assert table.broadcast("chat", "x", excluded=iter([1, 2, 3])) == 0
    assert table.broadcast("empty", "x") == 0


def test_broadcast_to_held_sockets_stays_queued_until_release(loop, table):
    sock = make(loop, 1, held=True)
    table.add(sock)
    assert table.broadcast("chat", "one") == 1
    assert table.broadcast("chat", "two") == 1
    assert [m.get("text") for m in sock.outbox] == [None, "one", "two"]  # behind the 101
    assert texts(1) == []
    sock.release()
    assert texts(1) == ["one", "two"]


def test_broadcast_excluding_an_unknown_id_counts_everyone(loop, table):
    table.add(make(loop, 1))
    table.add(make(loop, 2))
    assert table.broadcast("chat", "x", excluded=[99]) == 2


# --- closing -----------------------------------------------------------------------------


def test_close_group_closes_the_open_members_and_returns_how_many(loop, table):
    for sock in (make(loop, 1), make(loop, 2), make(loop, 3, state="closing"), make(loop, 4, "other")):
        table.add(sock)
    assert table.close_group("chat", CloseCode.GOING_AWAY, "bye") == 2
    assert closes(1) == [(1001, "bye")] and closes(2) == [(1001, "bye")]
    assert closes(3) == [] and closes(4) == []
    assert table.get(1).state is SocketState.CLOSING
    assert table.get(4).is_open
    # Closed sockets stay in the table until removed, but are no members any more.
    assert len(table) == 4
    assert table.close_group("chat", 1000, "") == 0
    assert table.broadcast("chat", "late") == 0


def test_close_all_closes_and_returns_every_socket(loop, table):
    socks = [make(loop, 1), make(loop, 2, "news"), make(loop, 3, state="closing")]
    for sock in socks:
        table.add(sock)
    closed = table.close_all(CloseCode.GOING_AWAY, "server shutting down")
    assert sorted(s.id for s in closed) == [1, 2, 3]
    assert closes(1) == [(1001, "server shutting down")]
    assert closes(2) == [(1001, "server shutting down")]
    assert closes(3) == []  # already closing: no second close frame
    assert all(not s.reaped for s in closed)
    assert all(s.state is SocketState.CLOSING for s in closed)


def test_close_all_reaped_marks_every_socket(loop, table):
    socks = [make(loop, 1), make(loop, 2, state="closing"), make(loop, 3, state="connecting")]
    for sock in socks:
        table.add(sock)
    closed = table.close_all(1013, "lost", reaped=True)
    assert {s.id for s in closed} == {1, 2, 3}
    assert all(s.reaped for s in socks)
    assert closes(1) == [(1013, "lost")]


def test_close_all_without_reaped_keeps_an_earlier_mark(loop, table):
    sock = make(loop, 1)
    sock.reaped = True
    other = make(loop, 2)
    table.add(sock)
    table.add(other)
    table.close_all(1001, "")
    assert sock.reaped is True
    assert other.reaped is False


def test_close_all_of_an_empty_table(table):
    assert table.close_all(1001, "") == []
