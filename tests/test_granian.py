"""wsgroups.servers.granian: the refusal to run under granian, in process.

``tests/test_e2e_servers.py`` starts a real granian and sees it refuse.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from wsgroups.routing import ProtocolRouter
from wsgroups.servers import granian

RUNNING_GRANIAN = {"granian": object(), "granian._granian": object(), "granian.server.mp": object()}


def test_a_process_running_granian_is_refused_with_the_reason() -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        granian.refuse_if_running(RUNNING_GRANIAN)
    message = str(caught.value)
    assert "granian" in message and "headers of websocket.accept" in message
    assert "daphne" in message and "hypercorn" in message  # what to use instead


def test_other_processes_are_not_refused() -> None:
    granian.refuse_if_running({"uvicorn.server": object(), "daphne.server": object()})
    assert granian.running_under_granian(sys.modules) == ("granian._granian" in sys.modules)


def test_get_asgi_application_refuses_under_granian(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsgroups.asgi import get_asgi_application

    monkeypatch.setitem(sys.modules, "granian._granian", object())
    with pytest.raises(ImproperlyConfigured, match="cannot run under granian"):
        get_asgi_application()


def test_lifespan_startup_fails_under_granian(monkeypatch: pytest.MonkeyPatch) -> None:
    async def start_member() -> None:
        raise AssertionError("a refused process must not join the cluster")

    monkeypatch.setattr("wsgroups.routing.start_member", start_member)
    monkeypatch.setitem(sys.modules, "granian._granian", object())
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("no scope reaches an application")

    asyncio.run(ProtocolRouter(app, app)({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.failed", "message": granian.REFUSAL}]
