"""The rooms of one process (wsgroups.room_table): names, meta, membership, and the room
operations on open members only.

The sockets' server ``send`` finishes at once, so everything here runs synchronously; the
event loop the sockets belong to is created but never run.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgroups.codes import CloseCode
from wsgroups.outbox import LocalSocket
from wsgroups.room_table import (
    MAX_ROOM_NAME,
    USER_ROOM_PREFIX,
    RoomTable,
    check_meta,
    check_room_name,
    user_room_name,
)

ACCEPT = {"type": "websocket.accept"}


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class Wire:
    def __init__(self):
        self.messages = []

    async def send(self, message):
        if message["type"] != "websocket.accept":
            self.messages.append(message)


def make(loop, socket_id, *, state="open"):
    """A socket in ``state`` ("connecting", "open" or "closing") and its wire."""
    wire = Wire()
    sock = LocalSocket(
        socket_id, "/ws", wire.send, loop, limit=10, counters={"frames_out": 0}, on_overflow=lambda sock: None
    )
    if state != "connecting":
        sock.accept(ACCEPT)
    if state == "closing":
        sock.close(CloseCode.NORMAL, "")
        wire.messages.clear()
    return sock, wire


# --- names, meta, users ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "room:42", "x" * MAX_ROOM_NAME, "Zimmer äöü 🙂", "with space"])
def test_valid_room_names_are_returned_as_they_are(name):
    assert check_room_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "name must not be empty"),
        ("x" * (MAX_ROOM_NAME + 1), "name is 201 characters long; a room name has at most 200"),
        ("tab\there", "has control characters"),
        ("line\nbreak", "has control characters"),
        ("nul\x00", "has control characters"),
        (None, r"name must be a room name \(str\), got NoneType"),
        (b"bytes", r"name must be a room name \(str\), got bytes"),
        (42, r"name must be a room name \(str\), got int"),
    ],
)
def test_invalid_room_names_are_a_value_error_naming_the_argument(name, message):
    with pytest.raises(ValueError, match=message):
        check_room_name(name)


@given(st.text(min_size=1, max_size=MAX_ROOM_NAME).filter(str.isprintable))
def test_property_every_printable_name_up_to_the_limit_is_valid(name):
    assert check_room_name(name) == name


@given(st.text(min_size=1, max_size=20).filter(lambda text: not text.isprintable()))
def test_property_a_name_with_an_unprintable_character_is_refused(name):
    with pytest.raises(ValueError, match="control characters"):
        check_room_name(name)


def test_meta_travels_as_json():
    assert check_meta(None) is None
    assert check_meta({"nick": "ann", "tags": ("a", "b")}) == {"nick": "ann", "tags": ["a", "b"]}
    assert check_meta("plain") == "plain"


@pytest.mark.parametrize("meta", [{1, 2}, object(), {"when": object()}, {"x": b"bytes"}])
def test_meta_that_is_not_json_is_a_value_error(meta):
    with pytest.raises(ValueError, match="meta must be JSON-serializable"):
        check_meta(meta)


class User:
    def __init__(self, pk):
        self.pk = pk


@pytest.mark.parametrize(("user", "room"), [(7, "7"), ("7", "7"), (User(7), "7"), (User("a-b"), "a-b")])
def test_user_room_name_from_a_user_or_a_pk(user, room):
    assert user_room_name(user) == USER_ROOM_PREFIX + room


@pytest.mark.parametrize("user", [None, User(None), True, ""])
def test_user_room_name_needs_a_saved_user(user):
    with pytest.raises(ValueError, match="user must be a saved user or a primary key"):
        user_room_name(user)


# --- membership ---------------------------------------------------------------------------


def test_join_leave_and_rooms_of(loop):
    rooms = RoomTable()
    a, _ = make(loop, 1)
    assert rooms.join(a, "x", {"n": 1}) is True
    assert rooms.join(a, "y") is True
    assert rooms.rooms_of(1) == ["x", "y"]
    assert rooms.leave(1, "x") is True
    assert rooms.leave(1, "x") is False
    assert rooms.leave(2, "x") is False
    assert rooms.rooms_of(1) == ["y"]
    assert rooms.leave(1, "y") is True
    assert rooms.by_room == {} and rooms.by_socket == {}


def test_take_changed_lists_the_sockets_whose_rooms_changed_once(loop):
    woken = []
    rooms = RoomTable(on_change=lambda: woken.append(1))
    a, _ = make(loop, 1)
    b, _ = make(loop, 2)
    c, _ = make(loop, 3)
    rooms.join(a, "x")
    rooms.join(a, "y")
    rooms.join(b, "x")
    rooms.join(c, "x")
    assert len(woken) == 4
    rooms.forget(3)  # ended: its registry row is closed, nothing to record
    assert rooms.take_changed() == {1: ["x", "y"], 2: ["x"]}
    assert rooms.take_changed() == {}
    rooms.join(a, "x", {"new": "meta"})
    assert rooms.leave(2, "y") is False
    assert rooms.take_changed() == {}  # neither changed a socket's rooms
    rooms.leave(2, "x")
    assert rooms.take_changed() == {2: []}
    assert len(woken) == 5


def test_joining_again_replaces_the_meta(loop):
    rooms = RoomTable()
    a, _ = make(loop, 1)
    rooms.join(a, "x", {"n": 1})
    rooms.join(a, "x", {"n": 2})
    assert rooms.presence("x") == [[1, {"n": 2}]]
    assert rooms.rooms_of(1) == ["x"]


@pytest.mark.parametrize("state", ["connecting", "closing"])
def test_a_socket_that_is_not_open_cannot_join(loop, state):
    rooms = RoomTable()
    sock, _ = make(loop, 1, state=state)
    assert rooms.join(sock, "x") is False
    assert rooms.rooms_of(1) == [] and rooms.by_room == {}


def test_a_closed_member_keeps_its_rooms_until_forgotten_but_is_not_counted(loop):
    rooms = RoomTable()
    a, _ = make(loop, 1)
    b, wire_b = make(loop, 2)
    rooms.join(a, "x", "ann")
    rooms.join(a, "y")
    rooms.join(b, "x", "bob")
    a.close(CloseCode.NORMAL, "")
    assert rooms.rooms_of(1) == ["x", "y"]  # what its disconnect handler sees
    assert rooms.member_ids("x") == [2]
    assert rooms.presence("x") == [[2, "bob"]]
    assert rooms.broadcast("x", "hi") == 1
    assert rooms.close_room("y", 4000, "") == 0
    assert rooms.counts() == [["x", 1]]
    rooms.forget(1)
    assert rooms.rooms_of(1) == []
    assert set(rooms.by_room) == {"x"}
    rooms.forget(1)  # twice is harmless
    assert [m.get("text") for m in wire_b.messages] == ["hi"]


# --- room operations ---------------------------------------------------------------------


def test_broadcast_reaches_open_members_but_the_excluded(loop):
    rooms = RoomTable()
    socks = {i: make(loop, i) for i in (1, 2, 3, 4)}
    for i in (1, 2, 3):
        rooms.join(socks[i][0], "x")
    assert rooms.broadcast("x", "text", excluded=[2, 99]) == 2
    assert rooms.broadcast("x", b"\x01") == 3
    assert rooms.broadcast("nobody", "x") == 0
    assert socks[1][1].messages == [
        {"type": "websocket.send", "text": "text"},
        {"type": "websocket.send", "bytes": b"\x01"},
    ]
    assert socks[2][1].messages == [{"type": "websocket.send", "bytes": b"\x01"}]
    assert socks[4][1].messages == []


def test_close_room_closes_its_open_members_with_code_and_reason(loop):
    rooms = RoomTable()
    socks = {i: make(loop, i) for i in (1, 2, 3)}
    rooms.join(socks[1][0], "x")
    rooms.join(socks[2][0], "x")
    rooms.join(socks[3][0], "y")
    assert rooms.close_room("x", 4010, "room closed") == 2
    for i in (1, 2):
        assert socks[i][1].messages == [{"type": "websocket.close", "code": 4010, "reason": "room closed"}]
    assert socks[3][0].is_open
    assert rooms.close_room("x", 4010, "again") == 0


def test_counts_per_room_of_open_members(loop):
    rooms = RoomTable()
    socks = [make(loop, i)[0] for i in (1, 2, 3)]
    for sock in socks:
        rooms.join(sock, "all")
    rooms.join(socks[0], "one")
    assert sorted(rooms.counts()) == [["all", 3], ["one", 1]]


@given(st.lists(st.tuples(st.sampled_from(["join", "leave", "forget"]), st.integers(1, 4), st.sampled_from("abc"))))
def test_property_the_two_indexes_always_agree(steps):
    loop = asyncio.new_event_loop()
    try:
        rooms = RoomTable()
        socks = {i: make(loop, i)[0] for i in range(1, 5)}
        model: dict[int, set[str]] = {}
        for action, socket_id, room in steps:
            if action == "join":
                assert rooms.join(socks[socket_id], room) is True
                model.setdefault(socket_id, set()).add(room)
            elif action == "leave":
                assert rooms.leave(socket_id, room) is (room in model.get(socket_id, set()))
                model.get(socket_id, set()).discard(room)
            else:
                rooms.forget(socket_id)
                model.pop(socket_id, None)
        for socket_id in socks:
            assert rooms.rooms_of(socket_id) == sorted(model.get(socket_id, ()))
        by_room = {room: sorted(members) for room, members in rooms.by_room.items()}
        expected: dict[str, list[int]] = {}
        for socket_id, names in sorted(model.items()):
            for name in names:
                expected.setdefault(name, []).append(socket_id)
        assert by_room == {room: sorted(ids) for room, ids in expected.items()}
    finally:
        loop.close()
