"""``/bench/ws``: upgrade into group ``bench`` and store the socket's ID for senders."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from bench.registry import WSGROUPS_KEY, sync_client
from wsgroups import HANDLED


def bench_ws(request: HttpRequest) -> HttpResponse:
    """Upgrade into group ``bench``; its ID joins the Redis set :data:`WSGROUPS_KEY`.

    With ``?store=0`` (echo and churn, which address no socket from outside) the socket
    joins ``bench-plain`` instead and nothing is stored, as the baseline does then. With
    ``?hello=1`` (the soak) the socket's first frame is ``hello <id>``, so the client
    knows which ID each of its connections has. With ``?room=<name>`` (the room
    scenarios) the socket joins that room too.
    """
    if not request.websocket:  # type: ignore[attr-defined]
        return HttpResponse("WebSocket only.", status=400)
    if request.GET.get("store") == "0":
        request.websocket.send_upgrade("bench-plain")  # type: ignore[attr-defined]
        return HANDLED
    ws = request.websocket.send_upgrade("bench")  # type: ignore[attr-defined]
    if room := request.GET.get("room"):
        ws.join(room)  # before its ID is stored: a sender that sees the ID finds it in the room
    if request.GET.get("hello") == "1":
        ws.send(f"hello {ws.id}")
    sync_client().sadd(WSGROUPS_KEY, ws.id)
    return HANDLED
