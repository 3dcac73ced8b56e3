"""``manage.py runserver`` (daphne's) carries headers, close codes with reasons and rejections."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import Server, run_ctl
from .wsclient import raw_handshake

pytestmark = pytest.mark.e2e


def test_runserver_serves_headers_close_reasons_and_rejections(server_factory: Callable[..., Server]) -> None:
    server = server_factory("runserver")
    response = raw_handshake(server.port, "/wstest")
    assert response.status == 101
    assert response.header("Set-Cookie") == ["MyCookie1=123", "MyCookie2=456"]
    assert response.header("MyHeader") == ["MyHeaderData"]
    response.close()

    rejected = raw_handshake(server.port, "/reject")
    assert (rejected.status, rejected.reason, rejected.body) == (418, "Nope Not Today", b"you shall not pass")
    rejected.close()

    async def close_code() -> tuple[int, str]:
        async with connect(f"{server.url}/ws/echo") as ws:
            json.loads(await ws.recv())
            await ws.send("close:1003:not acceptable")
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code, exc.rcvd.reason
        raise AssertionError("socket was not closed")

    assert asyncio.run(close_code()) == (1003, "not acceptable")


async def _open_echo(server: Server) -> tuple[object, int]:
    ws = await connect(f"{server.url}/ws/echo")
    return ws, int(json.loads(await ws.recv())["id"])


async def _close_code(ws, timeout: float) -> int | None:  # type: ignore[no-untyped-def]
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except (TimeoutError, asyncio.TimeoutError):
        return -1


def test_ctrl_c_under_the_autoreloader_closes_with_1001_and_records_the_stop(server_factory, base_env) -> None:  # type: ignore[no-untyped-def]
    server = server_factory("runserver-autoreload")

    async def scenario() -> tuple[int | None, int]:
        ws, socket_id = await _open_echo(server)
        os.killpg(server.process.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        return await _close_code(ws, 5), socket_id

    code, socket_id = asyncio.run(scenario())
    assert code == 1001, server.log()
    assert server.process.wait(15) == 0, server.log()
    log = server.log()
    assert "closed 1 sockets for shutdown" in log
    assert run_ctl(base_env, "registry", str(socket_id))["state"] == "closed"
    assert run_ctl(base_env, "process-of", str(socket_id))["stopped"] is True


def test_a_reload_closes_with_1001_and_is_not_taken_for_a_crash(server_factory, base_env) -> None:  # type: ignore[no-untyped-def]
    server = server_factory("runserver-autoreload")
    watched = Path(__file__).resolve().parent / "wsapp" / "views.py"

    async def scenario() -> tuple[int | None, int]:
        ws, socket_id = await _open_echo(server)
        # The views were imported by this first upgrade: give the reloader (it polls every
        # second) time to record their modification time before changing it.
        await asyncio.sleep(2.5)
        os.utime(watched)  # the autoreloader sees a change and restarts its child
        return await _close_code(ws, 30), socket_id

    code, socket_id = asyncio.run(scenario())
    assert code == 1001, server.log()
    old_process = run_ctl(base_env, "process-of", str(socket_id))
    assert old_process["stopped"] is True
    # The new child serves, and no process saw the old one as dead.
    deadline = time.monotonic() + 20
    while True:
        try:
            asyncio.run(_open_echo(server))
            break
        except OSError:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    # (Other tests' servers killed with SIGKILL share this database: only the old child counts.)
    assert f"process #{old_process['id']} stopped sending heartbeats" not in server.log()
