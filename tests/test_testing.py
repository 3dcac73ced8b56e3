"""``wsgroups.testing.connect``: in pytest (pytest-asyncio), and the usage module under Django's runner."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TypeVar

import pytest
from django.test import TestCase, override_settings

from wsgroups import Group, Room, WebSocket
from wsgroups.runtime import current_runtime
from wsgroups.testing import Refused, TestWebSocket, connect

from .conftest import ROOT

T = TypeVar("T")

IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def in_process(test: T) -> T:
    """pytest-asyncio runs the test; the registry is written from other threads, so the data
    must be committed (``transaction=True``), as with Django's TransactionTestCase."""
    return pytest.mark.asyncio(pytest.mark.django_db(transaction=True)(test))  # type: ignore[no-any-return]


@in_process
async def test_wstest_in_pytest() -> None:
    async with connect("/wstest", headers={"Origin": "http://allowed.example"}) as ws:
        assert ws.response.status_code == 101
        assert ws.response.cookies["MyCookie1"].value == "123"
        assert ws.response.cookies["MyCookie2"].value == "456"
        assert ws.response.headers["MyHeader"] == "MyHeaderData"
        assert await ws.receive() == "Hello WebSocket!"
        assert await ws.receive() == "Hello again WebSocket!"
        await ws.send("hi")
        assert await ws.receive() == "Here is the server push!"
    assert ws.close_code == 1000


@in_process
async def test_the_designs_example_as_written() -> None:
    async with connect("/wstest", headers={"Origin": "http://testserver"}) as ws:
        assert ws.response.status_code == 101
        assert ws.response.cookies["MyCookie1"].value == "123"
        assert ws.response.headers["MyHeader"] == "MyHeaderData"
        assert await ws.receive() == "Hello WebSocket!"
        await ws.send("hi")  # str → text frame, bytes → binary
        assert await ws.receive() == "Hello again WebSocket!"  # the view's second greeting
        assert await ws.receive() == "Here is the server push!"
    assert ws.close_code == 1000
    try:
        async with connect("/private"):
            pass
    except Refused as refused:
        assert refused.response.status_code == 302
    else:
        raise AssertionError("/private was not refused")


@in_process
async def test_the_socket_is_in_the_registry_while_open() -> None:
    from wsgroups.models import Connection

    async with connect("/ws/echo") as ws:
        await ws.receive()
        runtime = current_runtime()
        assert runtime is not None
        await runtime.flush_registry()
        row = await Connection.objects.aget(id=ws.id)
        assert row.group == "echo" and row.closed_at is None
    row = await Connection.objects.aget(id=ws.id)
    assert row.closed_at is not None


@in_process
async def test_the_disconnect_handler_has_run_when_the_block_ends(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / "events"
    monkeypatch.setenv("WSGROUPS_TEST_EVENTS", str(events))
    async with connect("/ws/echo") as ws:
        await ws.receive()
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    assert {"event": "disconnect", "id": ws.id, "group": "echo"}.items() <= rows[-1].items()


@in_process
async def test_a_client_close_code_reaches_the_application() -> None:
    async with connect("/ws/echo") as ws:
        await ws.receive()
        await ws.close(4444, "client leaves")
        assert (ws.close_code, ws.close_reason) == (4444, "client leaves")
        assert await WebSocket(ws.id).ais_dead()
        with pytest.raises(AssertionError, match="closed"):
            await ws.send("too late")


@in_process
async def test_an_error_in_the_block_propagates_and_the_socket_ends(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / "events"
    monkeypatch.setenv("WSGROUPS_TEST_EVENTS", str(events))
    with pytest.raises(KeyError, match="from the test"):
        async with connect("/ws/echo") as ws:
            await ws.receive()
            raise KeyError("from the test")
    assert ws.close_code == 1006
    assert await WebSocket(ws.id).ais_dead()
    assert [json.loads(line)["id"] for line in events.read_text().splitlines()] == [ws.id]
    assert current_runtime() is None


@in_process
async def test_receive_timeout_and_bad_input() -> None:
    async with connect("/ws/echo") as ws:
        await ws.receive()
        with pytest.raises(AssertionError, match=r"within 0\.1s"):
            await ws.receive(timeout=0.1)
        with pytest.raises(TypeError, match="str or bytes"):
            await ws.send(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must start with '/'"):
        async with connect("ws/echo"):
            pass
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        async with connect("/ws/echo", headers={"X-Bad": "a\r\nb"}):
            pass


@in_process
async def test_refused_carries_the_whole_response() -> None:
    with pytest.raises(Refused) as caught:
        async with connect("/reject"):
            pass
    response = caught.value.response
    assert (response.status_code, response.content, response.headers["X-Why"]) == (
        418,
        b"you shall not pass",
        "testing",
    )
    assert response.cookies["rejected"].value == "1"
    assert response.reason_phrase == "Nope Not Today"


@in_process
async def test_cookies_reach_the_view() -> None:
    with pytest.raises(Refused) as caught:
        async with connect("/private", cookies={"sessionid": "not-a-session"}):
            pass
    assert caught.value.response.status_code == 302


@in_process
async def test_in_memory_layer_in_pytest() -> None:
    with override_settings(CHANNEL_LAYERS=IN_MEMORY_LAYER):
        async with connect("/ws/room") as ws:
            await ws.receive()
            runtime = current_runtime()
            assert runtime is not None and runtime.transport is not None
            assert type(runtime.transport.layer).__name__ == "InMemoryChannelLayer"
            assert await Group("room").abroadcast("on the in-memory layer") == 1
            assert await ws.receive() == "on the in-memory layer"


@in_process
async def test_the_runtime_leaves_when_the_last_socket_closes() -> None:
    async with connect("/ws/echo") as first:
        async with connect("/ws/echo") as second:
            assert isinstance(second, TestWebSocket)
            runtime = current_runtime()
        assert current_runtime() is runtime
        await first.receive()
    assert current_runtime() is None


async def _rooms_on_testing_sockets(events_path: str) -> None:
    """Two testing sockets in a room: joined in the view and from the test, a broadcast with
    an exclusion and its count, presence with meta, a leave, and the disconnect handler
    still seeing the rooms."""
    async with connect("/ws/rooms?join=lobby&meta=%7B%22nick%22%3A%22ann%22%7D") as ann:
        hello = json.loads(await ann.receive())
        assert hello["joined"] == {"lobby": True}
        async with connect("/ws/rooms") as bob:
            await bob.receive()
            assert ann.id is not None and bob.id is not None
            assert await WebSocket(bob.id).ajoin("lobby", meta={"nick": "bob"}) is True
            await bob.send("join:side")  # from the socket's own handler
            assert json.loads(await bob.receive()) == {"joined": True}
            assert await WebSocket(bob.id).arooms() == {"lobby", "side"}
            assert await Room("lobby").apresence() == {ann.id: {"nick": "ann"}, bob.id: {"nick": "bob"}}
            assert sorted(ws.id for ws in await Room("lobby").asockets()) == sorted([ann.id, bob.id])
            assert await Room("lobby").abroadcast("to everyone") == 2
            assert await ann.receive() == "to everyone"
            assert await bob.receive() == "to everyone"
            assert await Room("lobby").abroadcast(b"\x01", exclude=[WebSocket(ann.id)]) == 1
            assert await bob.receive() == b"\x01"
            await ann.send("say:lobby:hi bob")
            assert await bob.receive() == "hi bob"
            assert json.loads(await ann.receive()) == {"said": 1}
            assert await WebSocket(ann.id).aleave("lobby") is True
            assert await Room("lobby").apresence() == {bob.id: {"nick": "bob"}}
            with pytest.raises(AssertionError, match="within"):
                await ann.receive(timeout=0.1)  # nothing else was queued for ann
        assert await Room("lobby").apresence() == {}
        assert await WebSocket(bob.id).ajoin("lobby") is False  # a closed socket cannot join
    rows = [json.loads(line) for line in open(events_path).read().splitlines()]
    gone = {row["id"]: row["rooms"] for row in rows if row["event"] == "disconnect"}
    assert gone == {bob.id: ["lobby", "side"], ann.id: []}


@in_process
async def test_rooms_work_on_testing_sockets(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WSGROUPS_TEST_EVENTS", str(tmp_path / "events"))
    await _rooms_on_testing_sockets(str(tmp_path / "events"))


@in_process
async def test_a_testing_socket_of_a_logged_in_user_is_in_the_users_room() -> None:
    from django.contrib.auth import get_user_model

    user = await get_user_model().objects.acreate_user("roomtester", password="x")
    async with connect("/ws/rooms", user=user) as tab:
        await tab.receive()
        async with connect("/ws/rooms") as anonymous:
            await anonymous.receive()
            assert await Room.for_user(user).apresence() == {tab.id: None}
            assert await Room.for_user(user.pk).abroadcast("for your tabs") == 1
            assert await tab.receive() == "for your tabs"
            with pytest.raises(AssertionError, match="within"):
                await anonymous.receive(timeout=0.1)


@in_process
async def test_rooms_work_on_testing_sockets_without_a_channel_layer(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WSGROUPS_TEST_EVENTS", str(tmp_path / "events"))
    with override_settings(CHANNEL_LAYERS={}):
        await _rooms_on_testing_sockets(str(tmp_path / "events"))


@in_process
async def test_rooms_work_on_testing_sockets_with_the_in_memory_layer(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WSGROUPS_TEST_EVENTS", str(tmp_path / "events"))
    with override_settings(CHANNEL_LAYERS=IN_MEMORY_LAYER):
        await _rooms_on_testing_sockets(str(tmp_path / "events"))


class InsideTestCase(TestCase):
    async def test_connect_refuses_to_run_inside_the_transaction_of_testcase(self) -> None:
        with self.assertRaisesRegex(RuntimeError, "Use TransactionTestCase"):
            async with connect("/ws/echo"):
                pass


@pytest.mark.e2e
@pytest.mark.parametrize("layer", ["redis", "in-memory"])
def test_the_usage_module_passes_under_djangos_test_runner(base_env: dict[str, str], layer: str) -> None:
    env = {**base_env, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    if layer == "in-memory":
        env["WSGROUPS_TEST_IN_MEMORY_LAYER"] = "1"
    done = subprocess.run(
        [sys.executable, "manage.py", "test", "tests.test_testing_usage", "-v", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
    )
    output = done.stderr.decode(errors="replace")
    assert done.returncode == 0, output
    assert "Ran 13 tests" in output and "\nOK" in output, output
