"""Which upgrades go to the project's Channels application, and what the client gets when it fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.http import HttpResponseBase

from wsgroups.consumer_routing import CONSUMER_SCOPE_KEY, path_has_view, serve_consumer


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/wstest", True), ("/ws/anything", True), ("/consumer/stock", False), ("/nowhere", False)],
)
def test_path_has_view_asks_the_urlconf(path: str, expected: bool) -> None:
    assert path_has_view({"path": path}) is expected


def test_path_has_view_strips_the_root_path() -> None:
    assert path_has_view({"path": "/mounted/wstest", "root_path": "/mounted"})
    assert not path_has_view({"path": "/mounted/consumer/stock", "root_path": "/mounted"})


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.rejections: list[HttpResponseBase] = []
        self.later = [{"type": "websocket.receive", "text": "second"}]

    async def receive(self) -> dict[str, Any]:
        return self.later.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(dict(message))

    async def reject(self, response: HttpResponseBase) -> None:
        self.rejections.append(response)

    def run(self, app: Any) -> None:
        first = {"type": "websocket.connect"}
        owner = object()
        asyncio.run(serve_consumer(app, {"path": "/p"}, first, self.receive, self.send, self.reject, owner))


def test_the_connect_message_is_handed_back_then_the_rest_follows() -> None:
    seen: list[Any] = []
    recorder = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope[CONSUMER_SCOPE_KEY] is not None)
        seen.append(await receive())
        seen.append(await receive())
        await send({"type": "websocket.accept"})

    recorder.run(app)
    assert seen == [True, {"type": "websocket.connect"}, {"type": "websocket.receive", "text": "second"}]
    assert recorder.sent == [{"type": "websocket.accept"}] and recorder.rejections == []


def test_no_route_is_a_404() -> None:
    recorder = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("No route found for path 'p'.")

    recorder.run(app)
    assert [r.status_code for r in recorder.rejections] == [404]


def test_a_failure_before_answering_is_a_500_and_after_it_propagates() -> None:
    recorder = Recorder()

    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise KeyError("boom")

    recorder.run(failing)
    assert [r.status_code for r in recorder.rejections] == [500]

    async def failing_later(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        raise ValueError("No route found, but after the accept")

    with pytest.raises(ValueError, match="after the accept"):
        Recorder().run(failing_later)
