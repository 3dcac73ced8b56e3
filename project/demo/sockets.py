"""Handlers of the demo's ``/wstest`` group, as in Starcounter's example."""

from __future__ import annotations

from wsgroups import WebSocket, handle


@handle.websocket("echotestws")
def echo_text(message: str, ws: WebSocket) -> None:
    WebSocket.current.send("Here is the server push!")  # type: ignore[union-attr]


@handle.websocket("echotestws")
def echo_binary(data: bytes, ws: WebSocket) -> None:
    ws.send(data)
