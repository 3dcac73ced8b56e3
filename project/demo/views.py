"""Views of the demo project."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from wsgroups import HANDLED


def wstest(request: HttpRequest) -> HttpResponse:
    """Starcounter's ``/wstest`` example: upgrade with cookies and a header, greet twice."""
    if request.websocket:  # type: ignore[attr-defined]
        ws = request.websocket.send_upgrade(  # type: ignore[attr-defined]
            "echotestws",
            cookies=["MyCookie1=123", "MyCookie2=456"],
            headers={"MyHeader": "MyHeaderData"},
        )
        ws.send("Hello WebSocket!")
        ws.send("Hello again WebSocket!")
        return HANDLED
    message = f"WebSocket upgrade on {request.path} was not approved."
    return HttpResponse(message, status=500, reason=message)
