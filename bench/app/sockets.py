"""wsgroups handlers of group ``bench``: text frames are echoed back, ended sockets leave the ID set."""

from __future__ import annotations

from bench.registry import WSGROUPS_KEY, sync_client
from wsgroups import WebSocket, handle


@handle.websocket("bench")
@handle.websocket("bench-plain")
def echo(message: str, ws: WebSocket) -> None:
    ws.send(message)


@handle.websocket_disconnect("bench")
def forget(ws: WebSocket) -> None:
    sync_client().srem(WSGROUPS_KEY, ws.id)
