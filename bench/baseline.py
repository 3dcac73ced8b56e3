"""The baseline: a bare Channels consumer doing what the wsgroups side of the benchmark does.

It accepts, joins the channel-layer group ``bench``, echoes text frames, relays
``bench.message`` events (from ``group_send`` or ``send``) to its client, and keeps its
``channel_name`` in the Redis set :data:`bench.registry.BARE_KEY` while it is open.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from bench.messages import GROUP
from bench.registry import BARE_KEY, async_client


class BareConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    groups = [GROUP]

    async def connect(self) -> None:
        # ``?store=0``: echo and churn address no socket from outside, so nothing is stored.
        self.stored = b"store=0" not in self.scope.get("query_string", b"")
        await self.accept()
        if self.stored:
            await async_client().sadd(BARE_KEY, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.stored:
            await async_client().srem(BARE_KEY, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.send(text_data=text_data)

    async def bench_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
