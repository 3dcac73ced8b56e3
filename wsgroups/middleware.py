"""``WebSocketMiddleware``: sets ``request.websocket`` on every request (None unless upgrading)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase, HttpResponseServerError

from .handled import HANDLED

__all__ = ["WebSocketMiddleware"]

logger = logging.getLogger("wsgroups")

#: Attribute under which the ASGI shell leaves the upgrade object on an upgrade request.
UPGRADE_ATTRIBUTE = "_wsgroups_upgrade"


class WebSocketMiddleware:
    """Expose the pending upgrade as ``request.websocket``; None on plain HTTP requests."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        request.websocket = getattr(request, UPGRADE_ATTRIBUTE, None)  # type: ignore[attr-defined]
        if self.async_mode:
            return self.__acall__(request)
        response: HttpResponseBase = self.get_response(request)
        return _checked(request, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await self.get_response(request)
        return _checked(request, response)


def _checked(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """``HANDLED`` answers an upgrade; on a plain HTTP request its 101 would leave the
    client waiting on a protocol switch that never comes, so it becomes a 500."""
    if response is HANDLED and getattr(request, UPGRADE_ATTRIBUTE, None) is None:
        logger.error("The view for %s returned HANDLED to a request that is not a WebSocket upgrade", request.path)
        return HttpResponseServerError("The view returned HANDLED to a request that is not a WebSocket upgrade.")
    return response
