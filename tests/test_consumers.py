"""``UpgradeConsumer`` and ``SyncUpgradeConsumer`` in the test process, through ``wsgroups.testing``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests.wsapp.consumers import EchoUpgrade
from wsgroups.models import Connection
from wsgroups.runtime import current_runtime
from wsgroups.testing import Refused, connect

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("consumers_beside_views"),
]


@pytest.fixture
def consumers_beside_views() -> Any:
    with override_settings(ASGI_APPLICATION="tests.asgi.application"):
        yield


async def test_the_upgrading_user_goes_into_the_registry() -> None:
    user = await get_user_model().objects.acreate_user("mae", password="not used")
    async with connect("/consumer/upgrade", user=user) as ws:
        await ws.receive()
        runtime = current_runtime()
        assert runtime is not None
        await runtime.flush_registry()
        row = await Connection.objects.aget(id=ws.id)
        assert (row.user_id, row.group) == (user.pk, "echo")


async def test_the_scope_session_is_attached_to_the_socket() -> None:
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session["name"] = "zoe"
    await session.asave()
    async with connect("/consumer/upgrade?session", cookies={"sessionid": str(session.session_key)}) as ws:
        await ws.receive()
        await ws.send("session")
        assert json.loads(await ws.receive()) == {"name": "zoe"}
        runtime = current_runtime()
        assert runtime is not None
        await runtime.flush_registry()
        row = await Connection.objects.aget(id=ws.id)
        assert row.session_key == session.session_key


async def test_a_new_session_is_saved_and_its_cookie_goes_on_the_101() -> None:
    async with connect("/consumer/upgrade?session") as ws:
        await ws.receive()
        key = ws.response.cookies["sessionid"].value
        runtime = current_runtime()
        assert runtime is not None
        await runtime.flush_registry()
        assert (await Connection.objects.aget(id=ws.id)).session_key == key


async def test_a_consumer_that_neither_upgrades_nor_rejects_refuses_with_403() -> None:
    with pytest.raises(Refused) as caught:
        async with connect("/consumer/upgrade?nothing"):
            pass
    assert caught.value.response.status_code == 403


async def test_the_connection_limits_apply_to_consumers() -> None:
    with override_settings(WSGROUPS={"MAX_CONNECTIONS": 1}):
        async with connect("/consumer/upgrade") as held:
            await held.receive()
            for path in ("/consumer/upgrade", "/consumer/stock"):
                with pytest.raises(Refused) as caught:
                    async with connect(path):
                        pass
                assert caught.value.response.status_code == 503
                assert b"Too many connections" in caught.value.response.content
        async with connect("/consumer/stock") as after:  # the count went down with the close
            await after.receive()


async def test_a_slow_consumer_is_refused_with_503() -> None:
    with override_settings(WSGROUPS={"HANDSHAKE_TIMEOUT": 0.2}), pytest.raises(Refused) as caught:
        async with connect("/consumer/upgrade?slow=2"):
            pass
    assert caught.value.response.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "5"


async def test_reject_takes_only_a_response_and_a_failing_connect_is_a_500(wslog: Any) -> None:
    with pytest.raises(Refused) as caught:
        async with connect("/consumer/upgrade?bad-reject"):
            pass
    assert caught.value.response.status_code == 500
    assert "must be a Django HttpResponse, got str" in wslog.text


async def test_reject_after_the_upgrade_is_an_error_closing_the_socket(wslog: Any) -> None:
    async with connect("/consumer/upgrade?reject-after-upgrade") as ws:
        with pytest.raises(AssertionError):
            await ws.receive()
    assert ws.close_code == 1011
    assert "was upgraded already; it cannot be rejected" in wslog.text


async def test_sync_consumer_upgrades_in_a_thread() -> None:
    async with connect("/consumer/sync-upgrade") as ws:
        assert ws.response.headers["X-Upgraded-By"] == "sync-consumer"
        assert (await ws.receive()).startswith('{"id": ')
        await ws.send("sync")
        assert await ws.receive() == "sync"


async def test_a_consumer_outside_wsgroups_is_refused_with_a_clear_error() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent")

    with pytest.raises(ImproperlyConfigured, match=r"get_asgi_application\(channels=\.\.\.\)"):
        await EchoUpgrade.as_asgi()({"type": "websocket", "path": "/consumer/upgrade"}, receive, send)
