"""``manage.py runserver`` (daphne's) carries headers, close codes with reasons and rejections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import Server
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
