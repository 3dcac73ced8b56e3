"""Consumers routed beside the views (``tests/asgi.py``): stock Channels ones and upgrade consumers."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import HttpResponse

from wsgroups.consumers import SyncUpgradeConsumer, UpgradeConsumer

from .events import record


def _query(scope: dict[str, object]) -> dict[str, str]:
    raw = scope.get("query_string") or b""
    assert isinstance(raw, bytes)
    return {name: values[-1] for name, values in parse_qs(raw.decode(), keep_blank_values=True).items()}


class StockConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """A plain Channels consumer: headers on accept, close with a code and reason, denial."""

    async def connect(self) -> None:
        query = _query(self.scope)
        if "deny" in query:
            body = b"consumer says no"
            await self.base_send(
                {
                    "type": "websocket.http.response.start",
                    "status": int(query["deny"]),
                    "headers": [
                        (b"Content-Type", b"text/plain"),
                        (b"Content-Length", str(len(body)).encode()),
                        (b"X-Denied-By", b"consumer"),
                    ],
                }
            )
            await self.base_send({"type": "websocket.http.response.body", "body": body})
            return
        if "refuse" in query:
            await self.close()
            return
        await self.accept(headers=[(b"X-Consumer", b"stock"), (b"Set-Cookie", b"flavour=plain")])
        user = self.scope.get("user")
        await self.send(json.dumps({"consumer": "stock", "user": getattr(user, "username", None) or None}))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None and text_data.startswith("close:"):
            _, code, reason = text_data.split(":", 2)
            await self.close(int(code), reason)
            return
        await self.send(text_data=text_data, bytes_data=bytes_data)


class EchoUpgrade(UpgradeConsumer):
    """Upgrades into the "echo" group with cookies and headers; ``?reject`` refuses, and the
    other query parameters misbehave for the tests (``nothing``, ``slow``, ``bad-reject``,
    ``reject-after-upgrade``)."""

    async def connect(self) -> None:
        query = _query(self.scope)
        if "reject" in query:
            response = HttpResponse("not on this path", status=451, headers={"X-Why": "consumer"})
            response.set_cookie("refused", "1")
            await self.reject(response)
            return
        if "nothing" in query:
            return
        if "slow" in query:
            await asyncio.sleep(float(query["slow"]))
        if "bad-reject" in query:
            await self.reject("not a response")  # type: ignore[arg-type]
        expected = self.websocket.id
        ws = await self.websocket.asend_upgrade(
            "echo",
            cookies=["ConsumerCookie=abc"],
            headers={"X-Upgraded-By": "consumer"},
            session=self.scope.get("session") if "session" in query else None,
            subprotocol=query.get("subprotocol"),
        )
        if "reject-after-upgrade" in query:
            await self.reject(HttpResponse("too late"))
        user = self.scope.get("user")
        record("upgraded", id=ws.id, by="consumer")
        await ws.asend(
            json.dumps(
                {
                    "id": ws.id,
                    "expected_id": expected,
                    "group": ws.group,
                    "user": getattr(user, "username", None) or None,
                }
            )
        )


class SyncEchoUpgrade(SyncUpgradeConsumer):
    """The sync form: upgrades into "echo"; ``?reject`` refuses with 409."""

    def connect(self) -> None:
        if "reject" in _query(self.scope):
            self.reject(HttpResponse("sync says no", status=409))
            return
        ws = self.websocket.send_upgrade("echo", headers={"X-Upgraded-By": "sync-consumer"})
        ws.send(json.dumps({"id": ws.id, "group": ws.group}))
