"""``wsgroups_live_server``: a real daphne against the test database, with real clients."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from websockets.asyncio.client import connect

from wsgroups import WebSocket
from wsgroups.testing.pytest import LiveServer, shared_test_databases

from .wsclient import raw_handshake

pytestmark = pytest.mark.e2e


def test_live_server_serves_the_upgrade_with_its_headers(wsgroups_live_server: LiveServer) -> None:
    assert wsgroups_live_server.url.startswith("http://127.0.0.1:")
    response = raw_handshake(wsgroups_live_server.port, "/wstest")
    try:
        assert response.status == 101
        assert response.header("MyHeader") == ["MyHeaderData"]
    finally:
        response.close()


def test_live_server_sees_what_the_test_wrote(wsgroups_live_server: LiveServer) -> None:
    user = get_user_model().objects.create_user("lin", password="not used")
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    async def scenario() -> tuple[int, str]:
        refused = raw_handshake(wsgroups_live_server.port, "/private")
        status = refused.status
        refused.close()
        async with connect(f"{wsgroups_live_server.ws_url}/private", additional_headers={"Cookie": cookie}) as ws:
            await ws.send("logged in")
            return status, str(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(scenario()) == (302, "logged in")


def test_the_test_process_reaches_a_live_socket_by_id(wsgroups_live_server: LiveServer) -> None:
    async def scenario() -> tuple[str, bool]:
        async with connect(f"{wsgroups_live_server.ws_url}/ws/echo") as ws:
            socket_id = int(json.loads(await asyncio.wait_for(ws.recv(), 10))["id"])
            sent = await asyncio.to_thread(WebSocket(socket_id).send, "from the test process")
            return str(await asyncio.wait_for(ws.recv(), 10)), sent

    assert asyncio.run(scenario()) == ("from the test process", True)


def test_the_test_databases_are_handed_to_the_server_by_name(transactional_db: None) -> None:
    from django.db import connections

    assert shared_test_databases() == {"default": connections["default"].settings_dict["NAME"]}


def test_an_in_memory_sqlite_test_database_is_refused_with_advice() -> None:
    from django.db import connections
    from django.db.backends.sqlite3.base import DatabaseWrapper

    settings_dict = {**connections["default"].settings_dict, "ENGINE": "django.db.backends.sqlite3"}
    memory = DatabaseWrapper({**settings_dict, "NAME": "file:memorydb_default?mode=memory&cache=shared"}, "default")
    with pytest.raises(ImproperlyConfigured, match=r"set DATABASES\['default'\]\['TEST'\]\['NAME'\] to a file"):
        shared_test_databases([memory])
