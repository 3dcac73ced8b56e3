"""``HANDLED``: what a view returns once ``request.websocket.send_upgrade()`` has sent the 101."""

from __future__ import annotations

from http.cookies import Morsel, SimpleCookie
from typing import Any

from django.http import HttpResponse
from django.http.response import ResponseHeaders

__all__ = ["HANDLED"]


class _DiscardedCookies(SimpleCookie):
    """A cookie jar that forgets every write, so ``set_cookie`` on ``HANDLED`` is harmless."""

    def __setitem__(self, key: str, value: Any) -> None:
        pass

    def __getitem__(self, key: str) -> Morsel[str]:
        return Morsel()


class _Handled(HttpResponse):
    """The response a view returns after ``send_upgrade``: the 101 already went out.

    It is one shared object, so whatever middleware writes into its headers or cookies
    goes to a throwaway copy and never leaks between requests.
    """

    def __init__(self) -> None:
        super().__init__(status=101, content_type="text/plain", charset="utf-8")

    @property
    def headers(self) -> ResponseHeaders:
        return ResponseHeaders({})

    @headers.setter
    def headers(self, value: ResponseHeaders) -> None:
        pass

    @property
    def cookies(self) -> Any:
        return _DiscardedCookies()

    @cookies.setter
    def cookies(self, value: Any) -> None:
        pass

    @property
    def _resource_closers(self) -> list[Any]:
        return []

    @_resource_closers.setter
    def _resource_closers(self, value: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "HANDLED"


#: Return this from a view that called ``request.websocket.send_upgrade``.
HANDLED: HttpResponse = _Handled()
