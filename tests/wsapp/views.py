"""Upgrade views exercising every part of ``request.websocket``."""

from __future__ import annotations

import json
import time

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse

from wsgroups import HANDLED, Group, WebSocket, active_websocket
from wsgroups.exceptions import TransportError, UpgradeError

from .events import record


def upgrade(request: HttpRequest, group: str) -> HttpResponse:
    """Upgrade into ``group``; query ``subprotocol`` picks one, ``session=1`` attaches the session."""
    if not request.websocket:
        return HttpResponse("WebSocket only", status=400)
    session = request.session if request.GET.get("session") else None
    ws = request.websocket.send_upgrade(group, session=session, subprotocol=request.GET.get("subprotocol"))
    meta = json.loads(request.GET.get("meta", "null"))
    joined = {name: ws.join(name, meta=meta) for name in request.GET.getlist("join")}  # rooms, right away
    ws.send(json.dumps({"id": ws.id, "expected_id": request.websocket.id, "group": ws.group, "joined": joined}))
    return HANDLED


def conformance(request: HttpRequest) -> HttpResponse:
    """Upgrade into ``conformance``, whose handlers echo every message as it came and send nothing else."""
    if not request.websocket:
        return HttpResponse("WebSocket only", status=400)
    request.websocket.send_upgrade("conformance")
    return HANDLED


def reject(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("you shall not pass", status=418, reason="Nope Not Today", content_type="text/plain")
    response["X-Why"] = "testing"
    response.set_cookie("rejected", "1")
    return response


def upgrade_twice(request: HttpRequest) -> HttpResponse:
    ws = request.websocket.send_upgrade("echo")
    try:
        request.websocket.send_upgrade("echo")
    except UpgradeError as exc:
        ws.send(f"error: {exc}")
    return HANDLED


def bad_header(request: HttpRequest) -> HttpResponse:
    name = request.GET["name"]
    value = request.GET.get("value", "x")
    request.websocket.send_upgrade("echo", headers={name: value})
    return HANDLED


def handled_without_upgrade(request: HttpRequest) -> HttpResponse:
    return HANDLED


@login_required
def private(request: HttpRequest) -> HttpResponse:
    request.websocket.send_upgrade("echo")
    return HANDLED


def set_session(request: HttpRequest) -> HttpResponse:
    request.session["name"] = request.GET.get("name", "anon")
    return HttpResponse("ok")


def session_socket(request: HttpRequest) -> HttpResponse:
    ws = active_websocket(request.session)
    return JsonResponse({"id": ws.id if ws else None})


def broadcast(request: HttpRequest, group: str) -> HttpResponse:
    count = Group(group).broadcast(request.GET.get("text", "ping"))
    return JsonResponse({"sent": count, "members": len(Group(group).sockets())})


def send_to(request: HttpRequest, socket_id: int) -> HttpResponse:
    try:
        return JsonResponse({"sent": WebSocket(socket_id).send(request.GET.get("text", "hello"))})
    except TransportError as exc:
        return JsonResponse({"error": "TransportError", "message": str(exc)})


def is_dead(request: HttpRequest, socket_id: int) -> HttpResponse:
    return JsonResponse({"dead": WebSocket(socket_id).is_dead()})


def disconnect_group(request: HttpRequest, group: str) -> HttpResponse:
    return JsonResponse({"closed": Group(group).disconnect("bye all", code=4001)})


def slow_upgrade(request: HttpRequest) -> HttpResponse:
    """Decide after ``?seconds=`` seconds; records whether the late upgrade was refused."""
    time.sleep(float(request.GET.get("seconds", "0")))
    try:
        ws = request.websocket.send_upgrade("echo")
    except UpgradeError as exc:
        record("late_upgrade_refused", error=str(exc))
        return HttpResponse("too late", status=500)
    ws.send(json.dumps({"id": ws.id}))
    return HANDLED
