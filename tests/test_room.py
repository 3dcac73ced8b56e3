"""``wsgroups.room.Room`` and the room methods of ``WebSocket`` on the sockets of this process
(a runtime with no channel layer), and with other servers' canned answers (a fake transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from wsgroups import Room as ExportedRoom
from wsgroups import ops
from wsgroups.codes import CloseCode
from wsgroups.exceptions import TransportError
from wsgroups.ids import make_id
from wsgroups.room import Room, room_counts
from wsgroups.room_table import USER_ROOM_PREFIX
from wsgroups.runtime import Runtime
from wsgroups.websocket import WebSocket

from .test_group import BLOCK, FakeTransport, Local, sid

OTHER = make_id(99, 1)


@pytest.fixture
def no_layer() -> Iterator[None]:
    with override_settings(CHANNEL_LAYERS={}):
        yield


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch, no_layer: None) -> Callable[[Callable[[Local], Any]], Any]:
    """``local(scenario)`` runs ``await scenario(Local)`` with a runtime of its own as this process's."""
    monkeypatch.setattr("wsgroups.runtime._runtime", None)

    def run(scenario: Callable[[Local], Any]) -> Any:
        async def main() -> Any:
            runtime = Runtime(asyncio.get_running_loop())
            monkeypatch.setattr("wsgroups.runtime._runtime", runtime)
            try:
                return await scenario(Local(runtime))
            finally:
                runtime.executor.shutdown(wait=False)
                runtime.upgrade_executor.shutdown(wait=False)

        return asyncio.run(main())

    return run


def held_here(here: Local) -> None:
    """The runtime allocated the test's ID block, so it holds every ID in it."""
    here.runtime._own_blocks.add(BLOCK)


def texts(here: Local, socket_id: int) -> list[Any]:
    return [m.get("text", m.get("bytes")) for i, m in here.frames() if i == socket_id and m["type"] == "websocket.send"]


# --- names -------------------------------------------------------------------------------


def test_room_is_exported_by_the_package():
    assert ExportedRoom is Room


@pytest.mark.parametrize("name", ["", "x" * 201, "a\nb", None, 5])
def test_invalid_room_names_are_a_value_error(name):
    with pytest.raises(ValueError, match="name"):
        Room(name)


def test_room_equality_repr_and_no_instance_dict():
    assert Room("a") == Room("a") and Room("a") != Room("b") and hash(Room("a")) == hash(Room("a"))
    assert repr(Room("chat:1")) == "<Room 'chat:1'>"
    with pytest.raises(AttributeError):
        Room("a").extra = 1  # type: ignore[attr-defined]


class User:
    pk = 12


def test_for_user_takes_a_user_or_a_pk():
    assert Room.for_user(User()) == Room.for_user(12) == Room(f"{USER_ROOM_PREFIX}12")
    with pytest.raises(ValueError, match="user"):
        Room.for_user(None)


# --- WebSocket.join / leave / rooms here -------------------------------------------------


def test_join_leave_and_rooms_of_a_socket_held_here(local):
    async def scenario(here: Local):
        held_here(here)
        here.socket(1, "chat")
        ws = WebSocket(sid(1))
        results = [await ws.ajoin("x", meta={"nick": "ann"}), await asyncio.to_thread(ws.join, "y")]
        rooms = [await ws.arooms(), await asyncio.to_thread(ws.rooms)]
        left = [await ws.aleave("x"), await asyncio.to_thread(ws.leave, "x")]
        return results, rooms, left, await ws.arooms(), await Room("y").apresence()

    results, rooms, left, after, presence = local(scenario)
    assert results == [True, True]
    assert rooms == [{"x", "y"}, {"x", "y"}]
    assert left == [True, False]
    assert after == {"y"}
    assert presence == {sid(1): None}


def test_a_closed_socket_cannot_join_but_keeps_its_rooms_until_forgotten(local):
    async def scenario(here: Local):
        held_here(here)
        sock = here.socket(1, "chat")
        ws = WebSocket(sid(1))
        await ws.ajoin("x")
        sock.close(CloseCode.NORMAL, "")
        here.runtime.table.remove(sock)  # what the application does before the disconnect handler
        seen_by_handler = await ws.arooms()
        joined = await ws.ajoin("y")
        here.runtime.rooms.forget(sock.id)
        return seen_by_handler, joined, await ws.arooms(), await Room("x").asockets()

    assert local(scenario) == ({"x"}, False, set(), [])


def test_an_id_nobody_holds_cannot_join_without_a_channel_layer(local):
    async def scenario(here: Local):
        ws = WebSocket(OTHER)
        return await ws.ajoin("x"), await ws.aleave("x"), await ws.arooms()

    assert local(scenario) == (False, False, set())


@pytest.mark.parametrize(("args", "match"), [(("",), "name"), (("x", {1, 2}), "meta")])
def test_join_checks_its_arguments_first(local, args, match):
    async def scenario(here: Local):
        held_here(here)
        here.socket(1, "chat")
        with pytest.raises(ValueError, match=match):
            WebSocket(sid(1)).join(*args)
        with pytest.raises(ValueError, match=match):
            await WebSocket(sid(1)).ajoin(*args)
        return await WebSocket(sid(1)).arooms()

    assert local(scenario) == set()


# --- Room operations here ----------------------------------------------------------------


def test_broadcast_reaches_the_members_but_the_excluded(local):
    async def scenario(here: Local):
        held_here(here)
        for n in (1, 2, 3, 4):
            here.socket(n, "chat")
        for n in (1, 2, 3):
            await WebSocket(sid(n)).ajoin("x")
        counts = [
            await Room("x").abroadcast("all"),
            await Room("x").abroadcast("some", exclude=[WebSocket(sid(1)), sid(2)]),
            await asyncio.to_thread(Room("x").broadcast, b"\x01"),
            await Room("x").abroadcast(b"text", is_text=True),
            await Room("empty").abroadcast("x"),
        ]
        await asyncio.sleep(0)
        return counts, {n: texts(here, sid(n)) for n in (1, 2, 3, 4)}

    counts, received = local(scenario)
    assert counts == [3, 1, 3, 3, 0]
    assert received[1] == ["all", b"\x01", "text"]
    assert received[3] == ["all", "some", b"\x01", "text"]
    assert received[4] == []


def test_disconnect_closes_the_members_only(local):
    async def scenario(here: Local):
        held_here(here)
        socks = [here.socket(n, "chat") for n in (1, 2, 3)]
        await WebSocket(sid(1)).ajoin("x")
        await WebSocket(sid(2)).ajoin("x")
        closed = [await Room("x").adisconnect("room closed", code=4010), Room("x").disconnect()]
        return closed, [(s.close_code, s.close_reason) for s in socks]

    closed, codes = local(scenario)
    assert closed == [2, 0]
    assert codes == [(4010, "room closed"), (4010, "room closed"), (None, "")]


def test_disconnect_checks_code_and_reason(local):
    async def scenario(here: Local):
        with pytest.raises(ValueError):
            Room("x").disconnect(code=1006)
        with pytest.raises(ValueError):
            await Room("x").adisconnect("x" * 124)

    local(scenario)


def test_without_a_runtime_or_layer_rooms_are_empty(monkeypatch, no_layer):
    monkeypatch.setattr("wsgroups.runtime._runtime", None)
    room = Room("x")
    assert (room.broadcast("x"), room.sockets(), room.presence(), room.disconnect()) == (0, [], {}, 0)
    assert room_counts() == {}


# --- other processes ---------------------------------------------------------------------


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeTransport], None]:
    def use(transport: FakeTransport) -> None:
        monkeypatch.setattr("wsgroups.room.cluster_transport", lambda: transport)

    return use


def test_abroadcast_adds_the_other_servers_counts(local, cluster):
    transport = FakeTransport({"a": 3, "b": TransportError("down"), "c": 4})
    cluster(transport)

    async def scenario(here: Local):
        held_here(here)
        here.socket(1, "chat")
        await WebSocket(sid(1)).ajoin("x")
        return await Room("x").abroadcast("hi", exclude=[OTHER])

    assert local(scenario) == 1 + 3 + 4
    assert [op for _, op in transport.requests] == [ops.RoomBroadcast("x", "hi", [OTHER])] * 3


def test_presence_and_sockets_merge_every_servers_answer(local, cluster):
    remote = {"a": [[make_id(77, 1), {"nick": "bob"}]], "b": [[make_id(78, 1), None], [make_id(78, 2), "c"]]}

    def answer(channel: str) -> Callable[[ops.Query], Any]:
        def reply(op: ops.Query) -> Any:
            pairs = remote[channel]
            return [socket_id for socket_id, _ in pairs] if isinstance(op, ops.RoomMembers) else pairs

        return reply

    transport = FakeTransport({channel: answer(channel) for channel in remote})
    cluster(transport)

    async def scenario(here: Local):
        transport.loop = asyncio.get_running_loop()
        held_here(here)
        here.socket(1, "chat")
        await WebSocket(sid(1)).ajoin("x", meta={"nick": "ann"})
        return (
            await Room("x").apresence(),
            await asyncio.to_thread(Room("x").presence),
            await Room("x").asockets(),
            await asyncio.to_thread(Room("x").sockets),
        )

    presence, presence_sync, sockets, sockets_sync = local(scenario)
    expected = {sid(1): {"nick": "ann"}, make_id(77, 1): {"nick": "bob"}, make_id(78, 1): None, make_id(78, 2): "c"}
    assert presence == presence_sync == expected
    assert sorted(ws.id for ws in sockets) == sorted(ws.id for ws in sockets_sync) == sorted(expected)


def test_adisconnect_and_room_counts_add_up_every_server(local, cluster):
    transport = FakeTransport({"a": lambda op: 2 if isinstance(op, ops.RoomClose) else [["x", 5], ["y", 1]]})
    cluster(transport)

    async def scenario(here: Local):
        transport.loop = asyncio.get_running_loop()
        held_here(here)
        here.socket(1, "chat")
        await WebSocket(sid(1)).ajoin("x")
        counts = await asyncio.to_thread(room_counts)
        return counts, await Room("x").adisconnect("bye", code=4000)

    counts, closed = local(scenario)
    assert counts == {"x": 6, "y": 1}
    assert closed == 3
