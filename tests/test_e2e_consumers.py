"""Channels consumers beside the views, over TCP, under runserver, the daphne command line and uvicorn.

The servers serve ``tests/asgi.py``: ``get_asgi_application(channels=AuthMiddlewareStack(URLRouter(...)))``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from .conftest import CHANNELS_APPLICATION, ROOT, Server, run_ctl, start_server
from .wsclient import close_of, raw_handshake

pytestmark = pytest.mark.e2e

KINDS = ("runserver", "daphne", "uvicorn")


@pytest.fixture(scope="module", params=KINDS)
def beside(
    request: pytest.FixtureRequest, base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server of each kind serving views and consumers side by side."""
    server = start_server(
        request.param, base_env, tmp_path_factory.mktemp(f"beside-{request.param}"), application=CHANNELS_APPLICATION
    )
    yield server
    server.stop(signal.SIGKILL, timeout=5)


def test_a_view_and_a_stock_consumer_are_served_by_one_application(beside: Server) -> None:
    view = raw_handshake(beside.port, "/wstest")
    try:
        assert view.status == 101
        assert view.header("MyHeader") == ["MyHeaderData"]
    finally:
        view.close()

    async def scenario() -> tuple[dict[str, object], str, bytes]:
        async with connect(f"{beside.url}/consumer/stock") as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send("ping")
            text = await asyncio.wait_for(ws.recv(), 10)
            await ws.send(b"\x00\x01")
            data = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(text, str) and isinstance(data, bytes)
            return hello, text, data

    assert asyncio.run(scenario()) == ({"consumer": "stock", "user": None}, "ping", b"\x00\x01")


def test_stock_consumer_headers_reach_the_101(beside: Server) -> None:
    response = raw_handshake(beside.port, "/consumer/stock")
    try:
        assert response.status == 101
        assert response.header("X-Consumer") == ["stock"]
        assert response.header("Set-Cookie") == ["flavour=plain"]
    finally:
        response.close()


@pytest.mark.parametrize(
    ("code", "reason"), [(1003, "not acceptable"), (1011, "broke: ünïcode"), (1013, "later"), (4321, "app code")]
)
def test_stock_consumer_close_code_and_reason_reach_the_client(beside: Server, code: int, reason: str) -> None:
    async def scenario() -> tuple[int, str]:
        async with connect(f"{beside.url}/consumer/stock") as ws:
            await asyncio.wait_for(ws.recv(), 10)
            await ws.send(f"close:{code}:{reason}")
            return await close_of(ws)

    assert asyncio.run(scenario()) == (code, reason)


def test_stock_consumer_denial_is_the_clients_response(beside: Server) -> None:
    response = raw_handshake(beside.port, "/consumer/stock?deny=401")
    try:
        assert response.status == 401
        assert response.body == b"consumer says no"
        assert response.header("X-Denied-By") == ["consumer"]
    finally:
        response.close()


def test_stock_consumer_closing_before_accept_is_a_403(beside: Server) -> None:
    response = raw_handshake(beside.port, "/consumer/stock?refuse")
    try:
        assert response.status == 403
    finally:
        response.close()


def test_an_upgrade_neither_side_claims_is_refused_and_serving_goes_on(beside: Server) -> None:
    for _ in range(2):
        response = raw_handshake(beside.port, "/nowhere/at/all")
        try:
            assert response.status == 404
            assert response.body == b"No view or consumer for this path."
        finally:
            response.close()
    after = raw_handshake(beside.port, "/consumer/stock")
    try:
        assert after.status == 101
    finally:
        after.close()


def test_the_origin_check_applies_to_consumers(beside: Server) -> None:
    refused = raw_handshake(beside.port, "/consumer/stock", {"Origin": "http://evil.example"})
    allowed = raw_handshake(beside.port, "/consumer/upgrade", {"Origin": "http://allowed.example"})
    try:
        assert refused.status == 403
        assert allowed.status == 101
    finally:
        refused.close()
        allowed.close()


def test_upgrade_consumer_sets_cookies_and_headers_and_joins_its_group(beside: Server) -> None:
    response = raw_handshake(beside.port, "/consumer/upgrade")
    try:
        assert response.status == 101
        assert response.header("Set-Cookie") == ["ConsumerCookie=abc"]
        assert response.header("X-Upgraded-By") == ["consumer"]
    finally:
        response.close()

    async def scenario() -> tuple[dict[str, object], str, str | None]:
        async with connect(f"{beside.url}/consumer/upgrade?subprotocol=chat.v2", subprotocols=["chat.v2"]) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send("echoed by the echo group's handler")
            return hello, str(await asyncio.wait_for(ws.recv(), 10)), ws.subprotocol

    hello, echoed, subprotocol = asyncio.run(scenario())
    assert hello["id"] == hello["expected_id"] and hello["group"] == "echo"
    assert echoed == "echoed by the echo group's handler"
    assert subprotocol == "chat.v2"


def test_upgrade_consumer_rejection_is_the_whole_response(beside: Server) -> None:
    response = raw_handshake(beside.port, "/consumer/upgrade?reject")
    try:
        assert response.status == 451
        assert response.body == b"not on this path"
        assert response.header("X-Why") == ["consumer"]
        assert any(cookie.startswith("refused=1") for cookie in response.header("Set-Cookie"))
    finally:
        response.close()
    silent = raw_handshake(beside.port, "/consumer/upgrade?nothing")
    try:
        assert silent.status == 403
    finally:
        silent.close()


def test_sync_upgrade_consumer_upgrades_and_rejects(beside: Server) -> None:
    rejected = raw_handshake(beside.port, "/consumer/sync-upgrade?reject")
    try:
        assert (rejected.status, rejected.body) == (409, b"sync says no")
    finally:
        rejected.close()

    async def scenario() -> tuple[dict[str, object], str]:
        async with connect(f"{beside.url}/consumer/sync-upgrade") as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send("sync hello")
            return hello, str(await asyncio.wait_for(ws.recv(), 10))

    hello, echoed = asyncio.run(scenario())
    assert hello["group"] == "echo" and echoed == "sync hello"


def test_upgrade_consumer_socket_is_reached_by_id_from_another_process(
    beside: Server, base_env: dict[str, str]
) -> None:
    async def scenario() -> tuple[str, tuple[int, str], bool]:
        async with connect(f"{beside.url}/consumer/upgrade") as ws:
            socket_id = int(json.loads(await asyncio.wait_for(ws.recv(), 10))["id"])
            assert await asyncio.to_thread(run_ctl, base_env, "send", str(socket_id), "from wsctl") is True
            pushed = str(await asyncio.wait_for(ws.recv(), 20))
            await asyncio.to_thread(run_ctl, base_env, "disconnect", str(socket_id), "bye from wsctl", "--code", "4000")
            closed = await close_of(ws, 20)
        dead = bool(await asyncio.to_thread(run_ctl, base_env, "is-dead", str(socket_id)))
        return pushed, closed, dead

    assert asyncio.run(scenario()) == ("from wsctl", (4000, "bye from wsctl"), True)


@pytest.fixture
def own_cluster(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """An environment with a database of its own: no other test's server reaps here."""
    env = dict(base_env)
    if "SQLITE_PATH" in env:
        env["SQLITE_PATH"] = str(tmp_path / "consumers.sqlite3")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
    return env


@pytest.mark.parametrize("victim_kind", ["daphne", "uvicorn"])
def test_upgrade_consumer_sockets_are_reaped_when_their_server_is_killed(
    own_cluster: dict[str, str], tmp_path: Path, victim_kind: str
) -> None:
    survivor = start_server("daphne" if victim_kind == "uvicorn" else "uvicorn", own_cluster, tmp_path)
    victim = start_server(victim_kind, own_cluster, tmp_path, application=CHANNELS_APPLICATION)
    try:
        _reap(survivor, victim, own_cluster)
    finally:
        survivor.stop(signal.SIGKILL, timeout=5)
        victim.stop(signal.SIGKILL, timeout=5)


def _reap(survivor: Server, victim: Server, env: dict[str, str]) -> None:
    opened: list[object] = []

    async def open_sockets() -> list[int]:
        ids = []
        for _ in range(3):
            ws = await connect(f"{victim.url}/consumer/upgrade")
            opened.append(ws)
            ids.append(int(json.loads(await asyncio.wait_for(ws.recv(), 10))["id"]))
        return ids

    ids = asyncio.run(open_sockets())
    assert run_ctl(env, "dead-map", ",".join(map(str, ids))) == {str(i): False for i in ids}
    os.killpg(victim.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def done(rows: list[dict[str, object]]) -> bool:
        return {r["id"] for r in rows if r["event"] == "disconnect"} >= set(ids)

    rows = survivor.wait_for_events(done, 20)
    elapsed = time.monotonic() - killed_at
    assert done(rows), survivor.log()
    assert elapsed < 4 + 1 + 5, f"reaping took {elapsed:.1f}s"  # PROCESS_TIMEOUT + a heartbeat + slack
    assert run_ctl(env, "dead-map", ",".join(map(str, ids))) == {str(i): True for i in ids}
    time.sleep(2.5)  # another reaping round must not run them again
    assert [sum(1 for r in survivor.events("disconnect") if r["id"] == i) for i in ids] == [1, 1, 1]
