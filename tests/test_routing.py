"""``wsgroups.routing.ProtocolRouter``: scopes by type, lifespan answered here, and the system
checks' recognition of the router behind ASGI middleware."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

import wsgroups.routing
from wsgroups.application import WebSocketApplication
from wsgroups.checks import routes_to_wsgroups
from wsgroups.routing import ProtocolRouter
from wsgroups.runtime import Runtime
from wsgroups.transport import WORKER_CHANNEL


class Recorder:
    """An ASGI app that records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append((scope, receive, send))


async def no_receive() -> dict[str, Any]:
    raise AssertionError("the router must not read this scope's messages")


async def no_send(message: dict[str, Any]) -> None:
    raise AssertionError("the router must not send on this scope")


class Lifespan:
    """The server's side of a lifespan scope."""

    def __init__(self, *messages: str) -> None:
        self.incoming = [{"type": kind} for kind in messages]
        self.sent: list[str] = []

    async def receive(self) -> dict[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["type"])


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_scope_goes_to_its_application_with_receive_and_send_unchanged(kind):
    http, websocket = Recorder(), Recorder()
    scope = {"type": kind, "path": "/x"}
    asyncio.run(ProtocolRouter(http, websocket)(scope, no_receive, no_send))
    chosen, other = (http, websocket) if kind == "http" else (websocket, http)
    assert len(chosen.calls) == 1
    called_scope, receive, send = chosen.calls[0]
    assert called_scope is scope and receive is no_receive and send is no_send
    assert other.calls == []


def test_websocket_application_defaults_to_wsgroups():
    http = Recorder()
    router = ProtocolRouter(http)
    assert router.http is http
    assert isinstance(router.websocket, WebSocketApplication)


@pytest.mark.parametrize("kind", ["webtransport", "HTTP", "", "lifespan.startup"])
def test_unknown_scope_type_raises_value_error_naming_it(kind):
    http, websocket = Recorder(), Recorder()
    with pytest.raises(ValueError, match=f"scope type {kind!r}"):
        asyncio.run(ProtocolRouter(http, websocket)({"type": kind}, no_receive, no_send))
    assert http.calls == [] and websocket.calls == []


def test_scope_without_type_is_a_key_error():
    with pytest.raises(KeyError):
        asyncio.run(ProtocolRouter(Recorder(), Recorder())({}, no_receive, no_send))


def test_worker_channel_scope_runs_the_worker(monkeypatch):
    served: list[Any] = []

    async def serve_worker(receive: Any) -> None:
        served.append(receive)

    monkeypatch.setattr(wsgroups.routing, "serve_worker", serve_worker)
    http, websocket = Recorder(), Recorder()
    asyncio.run(ProtocolRouter(http, websocket)({"type": "channel", "channel": WORKER_CHANNEL}, no_receive, no_send))
    assert served == [no_receive]
    assert http.calls == [] and websocket.calls == []


def test_other_channel_scopes_are_refused(monkeypatch):
    monkeypatch.setattr(wsgroups.routing, "serve_worker", None)  # must not be reached
    with pytest.raises(ValueError, match="'channel'"):
        asyncio.run(
            ProtocolRouter(Recorder(), Recorder())({"type": "channel", "channel": "other"}, no_receive, no_send)
        )


# --- lifespan -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """start_member, recorded instead of joining a real cluster."""
    calls: list[str] = []

    async def start_member() -> None:
        calls.append("start_member")

    monkeypatch.setattr(wsgroups.routing, "start_member", start_member)
    return calls


def test_lifespan_startup_joins_the_cluster_before_completing(started):
    lifespan = Lifespan("lifespan.startup", "lifespan.shutdown")
    order: list[str] = started

    async def send(message: dict[str, Any]) -> None:
        order.append(message["type"])
        await Lifespan.send(lifespan, message)

    asyncio.run(ProtocolRouter(Recorder(), Recorder())({"type": "lifespan"}, lifespan.receive, send))
    assert order == ["start_member", "lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_start_member_joins_and_logs_a_failure_without_raising(monkeypatch, caplog):
    monkeypatch.undo()  # the real start_member, with join and the signal handlers faked
    joined: list[Any] = []

    async def join(runtime: Any, kind: str) -> None:
        joined.append((runtime, kind))
        raise OSError("database away")

    monkeypatch.setattr(wsgroups.routing, "join", join)
    monkeypatch.setattr(wsgroups.routing, "install_signal_handlers", lambda runtime: None)
    monkeypatch.setattr("wsgroups.runtime._runtime", None)
    monkeypatch.setattr(logging.getLogger("wsgroups"), "propagate", True)
    with caplog.at_level(logging.ERROR, logger="wsgroups"):
        asyncio.run(wsgroups.routing.start_member())
        asyncio.run(wsgroups.routing.start_member(kind="worker"))
    assert [kind for _, kind in joined] == ["server", "worker"]
    assert "could not join the cluster at startup" in caplog.text


@pytest.fixture
def shutdowns(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    async def shutdown(runtime: Any) -> None:
        calls.append(runtime)

    monkeypatch.setattr(wsgroups.routing, "shutdown", shutdown)
    return calls


def test_lifespan_startup_and_shutdown_are_answered_without_a_runtime(monkeypatch, shutdowns):
    monkeypatch.setattr("wsgroups.runtime._runtime", None)
    lifespan = Lifespan("lifespan.startup", "lifespan.shutdown")
    asyncio.run(ProtocolRouter(Recorder(), Recorder())({"type": "lifespan"}, lifespan.receive, lifespan.send))
    assert lifespan.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert lifespan.incoming == []
    assert shutdowns == []  # no sockets here: nothing to close


def test_lifespan_shutdown_shuts_the_runtime_down_before_completing(monkeypatch):
    order: list[str] = []
    lifespan = Lifespan("lifespan.startup", "lifespan.shutdown")

    async def shutdown(runtime: Any) -> None:
        order.append(f"shutdown {runtime is held}")
        assert lifespan.sent == ["lifespan.startup.complete"]

    async def send(message: dict[str, Any]) -> None:
        order.append(message["type"])
        await Lifespan.send(lifespan, message)

    monkeypatch.setattr(wsgroups.routing, "shutdown", shutdown)

    async def scenario() -> None:
        nonlocal held
        held = Runtime(asyncio.get_running_loop())
        monkeypatch.setattr("wsgroups.runtime._runtime", held)
        await ProtocolRouter(Recorder(), Recorder())({"type": "lifespan"}, lifespan.receive, send)

    held: Runtime | None = None
    asyncio.run(scenario())
    assert order == ["lifespan.startup.complete", "shutdown True", "lifespan.shutdown.complete"]


def test_lifespan_ignores_unknown_messages_and_ends_only_at_shutdown(monkeypatch, shutdowns):
    monkeypatch.setattr("wsgroups.runtime._runtime", None)
    lifespan = Lifespan("lifespan.startup", "lifespan.something", "lifespan.shutdown", "lifespan.startup")
    asyncio.run(ProtocolRouter(Recorder(), Recorder())({"type": "lifespan"}, lifespan.receive, lifespan.send))
    assert lifespan.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert lifespan.incoming == [{"type": "lifespan.startup"}]  # nothing read after the shutdown


# --- checks.routes_to_wsgroups ------------------------------------------------------------


class Middleware:
    """ASGI middleware in the usual shape: the wrapped application in an attribute."""

    def __init__(self, inner: Any, attribute: str = "app") -> None:
        setattr(self, attribute, inner)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise NotImplementedError


def router() -> ProtocolRouter:
    return ProtocolRouter(Recorder(), Recorder())


def test_router_itself_routes_to_wsgroups():
    assert routes_to_wsgroups(router())


@pytest.mark.parametrize("attribute", ["app", "application", "inner"])
def test_router_wrapped_in_middleware_is_recognised(attribute):
    assert routes_to_wsgroups(Middleware(router(), attribute))
    assert routes_to_wsgroups(Middleware(Middleware(router()), attribute))


def test_router_behind_djangos_static_files_handler_is_recognised():
    assert routes_to_wsgroups(Middleware(ASGIStaticFilesHandler(router())))


def test_subclass_of_the_router_is_recognised():
    class Custom(ProtocolRouter):
        pass

    assert routes_to_wsgroups(Custom(Recorder(), Recorder()))


def test_applications_that_do_not_reach_the_router_are_not_recognised():
    assert not routes_to_wsgroups(Recorder())
    assert not routes_to_wsgroups(Middleware(Recorder()))
    assert not routes_to_wsgroups(None)


def test_instance_attribute_alone_does_not_count():
    impostor = Recorder()
    impostor.routes_websockets_to_wsgroups = True  # type: ignore[attr-defined]
    assert not routes_to_wsgroups(impostor)


def test_middleware_wrapping_itself_ends_the_search():
    loop = Middleware(None)
    loop.app = loop  # type: ignore[attr-defined]
    assert not routes_to_wsgroups(loop)


def test_search_is_bounded_by_depth():
    wrapped: Any = router()
    for _ in range(3):
        wrapped = Middleware(wrapped)
    assert routes_to_wsgroups(wrapped, depth=4)
    assert not routes_to_wsgroups(wrapped, depth=3)
