"""``wsgroups.testing.connect``: in pytest (pytest-asyncio), and the usage module under Django's runner."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TypeVar

import pytest
from django.test import TestCase, override_settings

from wsgroups import Group, WebSocket
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
