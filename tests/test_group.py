"""``wsgroups.group.Group`` on the sockets of this process (a runtime with no channel layer and
``LocalSocket`` objects in its table), and ``ask_each_server`` with a fake transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from wsgroups import ops
from wsgroups.cluster import ProcessInfo
from wsgroups.codes import CloseCode
from wsgroups.exceptions import TransportError
from wsgroups.group import Group, ask_each_server
from wsgroups.ids import make_id
from wsgroups.outbox import LocalSocket
from wsgroups.runtime import Runtime
from wsgroups.websocket import WebSocket

BLOCK = 4242


def sid(sequence: int) -> int:
    return make_id(BLOCK, sequence)


class Local:
    """A runtime of this test's own, with sockets whose sends are recorded."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sent: list[tuple[int, dict[str, Any]]] = []

    def socket(self, sequence: int, group: str, *, open_: bool = True) -> LocalSocket:
        socket_id = sid(sequence)

        async def send(message: dict[str, Any]) -> None:
            self.sent.append((socket_id, message))

        sock = LocalSocket(
            socket_id,
            f"/ws/{group}",
            send,
            self.runtime.loop,
            limit=100,
            counters=self.runtime.stats,
            on_overflow=lambda sock: None,
        )
        sock.group = group
        if open_:
            sock.accept({"type": "websocket.accept"})
        self.runtime.table.add(sock)
        return sock

    def frames(self) -> list[tuple[int, dict[str, Any]]]:
        """What went to the clients after their 101s."""
        return [(i, m) for i, m in self.sent if m["type"] != "websocket.accept"]


@pytest.fixture
def no_layer() -> Iterator[None]:
    with override_settings(CHANNEL_LAYERS={}):
        yield


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch, no_layer: None) -> Callable[[Callable[[Local], Any]], Any]:
    """``local(scenario)`` runs ``await scenario(Local)`` with that runtime as this process's."""
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


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", None, 5, b"chat", ["chat"]])
def test_group_name_must_be_a_non_empty_str(name):
    with pytest.raises(ValueError, match=r"^name must be a non-empty group name, got "):
        Group(name)


def test_group_keeps_its_name_and_repr():
    group = Group("chat room")
    assert group.name == "chat room"
    assert repr(group) == "<Group 'chat room'>"


def test_group_has_no_instance_dict():
    with pytest.raises(AttributeError):
        Group("chat").extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"code": 1006}, ValueError), ({"code": "1000"}, TypeError), ({"message": "x" * 124}, ValueError)],
)
def test_disconnect_arguments_are_checked_before_anything_is_closed(local, kwargs, error):
    async def scenario(here: Local):
        sock = here.socket(1, "chat")
        with pytest.raises(error):
            Group("chat").disconnect(**kwargs)
        with pytest.raises(error):
            await Group("chat").adisconnect(**kwargs)
        return sock.is_open, here.frames()

    assert local(scenario) == (True, [])


@pytest.mark.parametrize("data", [None, 3, 1.5])
def test_broadcast_data_must_be_str_or_bytes(local, data):
    async def scenario(here: Local):
        here.socket(1, "chat")
        with pytest.raises(TypeError, match="data"):
            Group("chat").broadcast(data)
        return here.frames()

    assert local(scenario) == []


# --- the local part -----------------------------------------------------------------------


def test_broadcast_reaches_open_members_of_the_group_only(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        here.socket(2, "chat")
        here.socket(3, "other")
        closing = here.socket(4, "chat")
        closing.close(1000, "")
        here.socket(5, "chat", open_=False)  # still handshaking
        here.sent.clear()
        count = Group("chat").broadcast("hi")
        return count, here.frames()

    count, frames = local(scenario)
    assert count == 2
    assert frames == [
        (sid(1), {"type": "websocket.send", "text": "hi"}),
        (sid(2), {"type": "websocket.send", "text": "hi"}),
    ]


def test_broadcast_excludes_sockets_given_as_websockets_or_ids(local):
    async def scenario(here: Local):
        for sequence in range(1, 6):
            here.socket(sequence, "chat")
        count = Group("chat").broadcast(b"\x00", exclude=[WebSocket(sid(1)), sid(3), make_id(BLOCK + 1, 1)])
        return count, here.frames()

    count, frames = local(scenario)
    assert count == 3
    assert [socket_id for socket_id, _ in frames] == [sid(2), sid(4), sid(5)]
    assert all(message == {"type": "websocket.send", "bytes": b"\x00"} for _, message in frames)


def test_broadcast_honours_is_text(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        Group("chat").broadcast("é", is_text=False)
        Group("chat").broadcast("é".encode(), is_text=True)
        return [message for _, message in here.frames()]

    assert local(scenario) == [
        {"type": "websocket.send", "bytes": "é".encode()},
        {"type": "websocket.send", "text": "é"},
    ]


def test_broadcast_to_an_empty_or_unknown_group_is_zero(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        return Group("nobody").broadcast("hi"), await Group("nobody").abroadcast("hi"), here.frames()

    assert local(scenario) == (0, 0, [])


def test_broadcast_from_another_thread_runs_on_the_runtimes_loop(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        here.socket(2, "chat")
        count = await asyncio.to_thread(Group("chat").broadcast, "from a thread", [sid(2)])
        return count, here.frames()

    count, frames = local(scenario)
    assert count == 1
    assert frames == [(sid(1), {"type": "websocket.send", "text": "from a thread"})]


def test_abroadcast_counts_like_broadcast(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        here.socket(2, "chat")
        return await Group("chat").abroadcast("x", exclude=[sid(1)]), here.frames()

    count, frames = local(scenario)
    assert count == 1
    assert frames == [(sid(2), {"type": "websocket.send", "text": "x"})]


def test_disconnect_closes_every_open_member_with_code_and_reason(local):
    async def scenario(here: Local):
        first, second, other = here.socket(1, "chat"), here.socket(2, "chat"), here.socket(3, "other")
        count = Group("chat").disconnect("bye all", code=4001)
        again = Group("chat").disconnect()
        return count, again, here.frames(), [s.is_open for s in (first, second, other)]

    count, again, frames, open_ = local(scenario)
    assert count == 2
    assert again == 0  # closing sockets are not closed twice
    close = {"type": "websocket.close", "code": 4001, "reason": "bye all"}
    assert frames == [(sid(1), close), (sid(2), close)]
    assert open_ == [False, False, True]


def test_disconnect_defaults_to_going_away_without_a_reason(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        return await Group("chat").adisconnect(), here.frames()

    count, frames = local(scenario)
    assert count == 1
    assert frames == [(sid(1), {"type": "websocket.close", "code": int(CloseCode.GOING_AWAY), "reason": ""})]


def test_broadcast_after_disconnect_reaches_nobody(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        Group("chat").disconnect()
        return Group("chat").broadcast("late")

    assert local(scenario) == 0


def test_sockets_lists_the_open_members(local):
    async def scenario(here: Local):
        here.socket(1, "chat")
        here.socket(2, "chat").close(1000, "")
        here.socket(3, "chat")
        here.socket(4, "other")
        return Group("chat").sockets(), await Group("chat").asockets(), await asyncio.to_thread(Group("chat").sockets)

    sync, async_, threaded = local(scenario)
    assert sync == [WebSocket(sid(1)), WebSocket(sid(3))]
    assert async_ == sync and threaded == sync
    assert all(type(ws) is WebSocket for ws in sync)


def test_without_a_runtime_groups_are_empty(monkeypatch, no_layer):
    monkeypatch.setattr("wsgroups.runtime._runtime", None)
    group = Group("chat")
    assert group.broadcast("hi") == 0
    assert group.disconnect() == 0
    assert group.sockets() == []
    assert asyncio.run(group.abroadcast("hi")) == 0
    assert asyncio.run(group.adisconnect()) == 0
    assert asyncio.run(group.asockets()) == []


# --- other processes ----------------------------------------------------------------------


class FakeDirectory:
    def __init__(self, servers: list[ProcessInfo]) -> None:
        self.servers = servers

    async def live_servers(self) -> list[ProcessInfo]:
        return list(self.servers)


class FakeTransport:
    """A transport whose directory lists servers and whose requests get canned answers."""

    def __init__(self, answers: dict[str, Any], channel_name: str = "me") -> None:
        self.channel_name = channel_name
        self.answers = answers
        servers = [ProcessInfo(i, channel, "server") for i, channel in enumerate([channel_name, *answers], start=1)]
        self.directory = FakeDirectory(servers)
        self.requests: list[tuple[str, Any]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def request(self, channel: str, op: ops.Query) -> Any:
        self.requests.append((channel, op))
        answer = self.answers[channel]
        if isinstance(answer, BaseException):
            raise answer
        return answer(op) if callable(answer) else answer

    async def await_on_loop(self, coroutine: Any) -> Any:
        return await coroutine

    def block_on(self, coroutine: Any, what: str) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(5)


def test_ask_each_server_asks_every_other_server_and_logs_the_one_that_failed(wslog):
    transport = FakeTransport({"a": 2, "b": TransportError("no answer from b"), "c": 5})
    op = ops.Broadcast("chat", "hi", [])
    answers = asyncio.run(ask_each_server(transport, op))  # type: ignore[arg-type]
    assert sorted(answers) == [2, 5]
    assert sorted(channel for channel, _ in transport.requests) == ["a", "b", "c"]  # never "me"
    assert all(sent is op for _, sent in transport.requests)
    warnings = [r.getMessage() for r in wslog.records if r.levelno == logging.WARNING]
    assert warnings == ["wsgroups: process #3 did not answer Broadcast: no answer from b"]


def test_ask_each_server_with_no_other_server_asks_nobody():
    transport = FakeTransport({})
    assert asyncio.run(ask_each_server(transport, ops.Members("chat"))) == []  # type: ignore[arg-type]
    assert transport.requests == []


def test_ask_each_server_skips_workers_and_servers_without_a_channel():
    transport = FakeTransport({"a": 1})
    transport.directory.servers += [ProcessInfo(7, "w", "worker"), ProcessInfo(8, "", "server")]

    class Directory(FakeDirectory):
        async def live_servers(self) -> list[ProcessInfo]:
            # What Directory.live_servers() filters, as it does for the real directory.
            return [s for s in self.servers if s.kind == "server" and s.channel_name]

    transport.directory = Directory(transport.directory.servers)
    assert asyncio.run(ask_each_server(transport, ops.Members("chat"))) == [1]  # type: ignore[arg-type]
    assert [channel for channel, _ in transport.requests] == ["a"]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeTransport], None]:
    def use(transport: FakeTransport) -> None:
        monkeypatch.setattr("wsgroups.group.cluster_transport", lambda: transport)

    return use


def test_abroadcast_adds_the_other_servers_counts_to_the_local_one(local, cluster, wslog):
    transport = FakeTransport({"a": 3, "b": RuntimeError("process gone"), "c": 4})
    cluster(transport)

    async def scenario(here: Local):
        here.socket(1, "chat")
        here.socket(2, "chat")
        return await Group("chat").abroadcast("hi", exclude=[sid(2), make_id(99, 1)])

    assert local(scenario) == 1 + 3 + 4
    expected = ops.Broadcast("chat", "hi", sorted([sid(2), make_id(99, 1)]))
    assert [op for _, op in transport.requests] == [expected] * 3
    assert any("did not answer Broadcast: process gone" in r.getMessage() for r in wslog.records)


def test_broadcast_from_a_thread_adds_the_other_servers_counts(local, cluster):
    transport = FakeTransport({"a": 10, "b": TransportError("down")})
    cluster(transport)

    async def scenario(here: Local):
        transport.loop = asyncio.get_running_loop()
        here.socket(1, "chat")
        return await asyncio.to_thread(Group("chat").broadcast, b"data")

    assert local(scenario) == 11
    assert [op for channel, op in transport.requests if channel == "a"] == [ops.Broadcast("chat", b"data", [])]


def test_adisconnect_adds_the_other_servers_counts(local, cluster):
    transport = FakeTransport({"a": 2, "b": 0})
    cluster(transport)

    async def scenario(here: Local):
        here.socket(1, "chat")
        return await Group("chat").adisconnect("bye", code=4000)

    assert local(scenario) == 3
    assert [op for _, op in transport.requests] == [ops.GroupClose("chat", 4000, "bye")] * 2


def test_asockets_merges_the_other_servers_members(local, cluster):
    remote = [make_id(77, 1), make_id(77, 2)]
    transport = FakeTransport({"a": remote, "b": TransportError("down"), "c": []})
    cluster(transport)

    async def scenario(here: Local):
        here.socket(1, "chat")
        return await Group("chat").asockets()

    assert local(scenario) == [WebSocket(sid(1)), *map(WebSocket, remote)]
    assert [op for _, op in transport.requests] == [ops.Members("chat")] * 3
