"""``ProtocolRouter``: each ASGI scope type goes to its application; unknown types are refused."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgroups.routing import ProtocolRouter
from wsgroups.transport import WORKER_CHANNEL


class Recorder:
    """An ASGI app that records the scopes it was called with."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, object]] = []

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)


async def _never_receive():
    raise AssertionError("the router must not read messages for this scope")


async def _never_send(message):
    raise AssertionError("the router must not send for this scope")


def _route(scope: dict[str, object]) -> tuple[Recorder, Recorder]:
    http, websocket = Recorder(), Recorder()
    asyncio.run(ProtocolRouter(http, websocket)(scope, _never_receive, _never_send))
    return http, websocket


extra_fields = st.dictionaries(st.sampled_from(["path", "headers", "client", "state"]), st.text(max_size=10))


@given(st.sampled_from(["http", "websocket"]), extra_fields)
def test_property_http_and_websocket_scopes_reach_their_application_unchanged(kind, extra):
    scope = {**extra, "type": kind}
    http, websocket = _route(scope)
    chosen, other = (http, websocket) if kind == "http" else (websocket, http)
    assert chosen.scopes == [scope]
    assert chosen.scopes[0] is scope
    assert other.scopes == []


@given(st.text(max_size=30).filter(lambda kind: kind not in ("http", "websocket", "lifespan", "channel")))
def test_property_unknown_scope_types_raise_value_error_naming_the_type(kind):
    http, websocket = Recorder(), Recorder()
    router = ProtocolRouter(http, websocket)
    with pytest.raises(ValueError) as caught:
        asyncio.run(router({"type": kind}, _never_receive, _never_send))
    assert repr(kind) in str(caught.value)
    assert http.scopes == [] and websocket.scopes == []


@given(st.one_of(st.none(), st.text(max_size=30).filter(lambda name: name != WORKER_CHANNEL)))
def test_property_channel_scopes_other_than_the_worker_channel_are_refused(channel):
    scope = {"type": "channel"} if channel is None else {"type": "channel", "channel": channel}
    http, websocket = Recorder(), Recorder()
    with pytest.raises(ValueError, match="'channel'"):
        asyncio.run(ProtocolRouter(http, websocket)(scope, _never_receive, _never_send))
    assert http.scopes == [] and websocket.scopes == []


def test_lifespan_startup_and_shutdown_are_answered_by_the_router(monkeypatch):
    async def start_member() -> None:  # joining the cluster is tests/test_routing.py's
        pass

    monkeypatch.setattr("wsgroups.routing.start_member", start_member)
    http, websocket = Recorder(), Recorder()
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, object]] = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(ProtocolRouter(http, websocket)({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert http.scopes == [] and websocket.scopes == []


@pytest.mark.django_db  # building the application checks the migrations
def test_get_asgi_application_hands_the_channels_application_to_the_websocket_side() -> None:
    from wsgroups.application import WebSocketApplication
    from wsgroups.asgi import get_asgi_application

    consumers = Recorder()
    router = get_asgi_application(channels=consumers)
    assert isinstance(router.websocket, WebSocketApplication)
    assert router.websocket.channels is consumers
    assert get_asgi_application().websocket.channels is None  # type: ignore[attr-defined]


def test_get_asgi_application_refuses_a_channels_argument_that_is_not_an_application() -> None:
    from wsgroups.asgi import get_asgi_application

    with pytest.raises(ValueError, match="channels must be an ASGI application"):
        get_asgi_application(channels="chat.routing.websocket_urlpatterns")  # type: ignore[arg-type]


@pytest.mark.django_db
def test_the_migration_check_runs_when_the_application_is_loaded_on_a_running_event_loop():
    """uvicorn --workers N and gunicorn's uvicorn worker load the application from their
    event loop, where Django refuses queries: the check runs in a thread of its own."""
    from django.core.exceptions import SynchronousOnlyOperation

    from wsgroups.asgi import _outside_event_loop
    from wsgroups.checks import check_migrations

    async def on_the_loop(check):
        return check()

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(on_the_loop(check_migrations))
    assert asyncio.run(on_the_loop(lambda: _outside_event_loop(check_migrations))) == []
    assert _outside_event_loop(check_migrations) == []
