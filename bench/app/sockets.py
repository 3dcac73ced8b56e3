"""wsgroups handlers of group ``bench``: text frames are echoed back, ended sockets leave the ID set
and count their handler run in :data:`bench.registry.DISCONNECTS_KEY` (a second run shows as 2)."""

from __future__ import annotations

from bench.registry import DISCONNECTS_KEY, WSGROUPS_KEY, sync_client
from wsgroups import WebSocket, handle


@handle.websocket("bench")
@handle.websocket("bench-plain")
async def echo(message: str, ws: WebSocket) -> None:
    # Async, like the baseline's AsyncWebsocketConsumer.receive (a sync handler would add a
    # thread hop per frame, which is what makes sync handlers ORM-safe).
    await ws.asend(message)


@handle.websocket_disconnect("bench")
def forget(ws: WebSocket) -> None:
    with sync_client().pipeline(transaction=False) as pipe:
        pipe.srem(WSGROUPS_KEY, ws.id).hincrby(DISCONNECTS_KEY, str(ws.id), 1).execute()
