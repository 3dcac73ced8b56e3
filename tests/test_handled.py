"""``HANDLED``: one shared response object, so nothing written into it may stick or leak."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from django.test import RequestFactory
from django.utils.cache import add_never_cache_headers, patch_vary_headers

from wsgroups import HANDLED
from wsgroups.handled import HANDLED as HANDLED_FROM_MODULE


def test_handled_is_one_http_response_with_status_101():
    assert HANDLED is HANDLED_FROM_MODULE
    assert isinstance(HANDLED, HttpResponse)
    assert HANDLED.status_code == 101
    assert HANDLED.reason_phrase == "Switching Protocols"


def test_repr():
    assert repr(HANDLED) == "HANDLED"


def test_header_writes_are_discarded():
    HANDLED["X-Leak"] = "1"
    HANDLED.headers["X-Direct"] = "2"
    HANDLED.setdefault("X-Default", "3")
    patch_vary_headers(HANDLED, ["Cookie"])
    add_never_cache_headers(HANDLED)
    assert not HANDLED.has_header("X-Leak")
    assert "X-Direct" not in HANDLED
    assert HANDLED.get("X-Default") is None
    assert HANDLED.get("Vary") is None and HANDLED.get("Cache-Control") is None
    assert list(HANDLED.items()) == []
    with pytest.raises(KeyError):
        HANDLED["X-Leak"]


def test_deleting_a_header_is_harmless():
    del HANDLED["X-Never-Set"]
    assert list(HANDLED.items()) == []


def test_replacing_headers_or_cookies_is_discarded():
    from http.cookies import SimpleCookie

    from django.http.response import ResponseHeaders

    HANDLED.headers = ResponseHeaders({"X-Replaced": "1"})
    HANDLED.cookies = SimpleCookie("replaced=1")
    assert list(HANDLED.items()) == []
    assert dict(HANDLED.cookies) == {}


def test_cookie_writes_are_discarded():
    HANDLED.set_cookie("leak", "1")
    HANDLED.set_signed_cookie("signed", "2")
    HANDLED.delete_cookie("sessionid")
    HANDLED.cookies["direct"] = "3"
    assert dict(HANDLED.cookies) == {}
    assert "leak" not in HANDLED.cookies
    # Reading a cookie that middleware just "set" must not fail either.
    assert HANDLED.cookies["leak"].value is None


@pytest.mark.django_db  # close() sends request_finished, which closes old database connections
def test_resource_closers_do_not_accumulate():
    closed: list[str] = []
    HANDLED._resource_closers.append(lambda: closed.append("closer"))
    HANDLED.close()
    HANDLED.close()
    assert closed == []
    assert HANDLED._resource_closers == []


def _request(path: str) -> HttpRequest:
    return RequestFactory().get(path, HTTP_HOST="127.0.0.1")


class StampMiddleware:
    """Writes per-request headers and cookies on the way out, as project middleware might."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Request-Path"] = request.path
        response.set_cookie("last_path", request.path)
        return response


def with_middleware(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """``view`` behind Django's header- and cookie-writing middleware and :class:`StampMiddleware`."""
    chain = view
    for middleware in (StampMiddleware, XFrameOptionsMiddleware, CommonMiddleware, SessionMiddleware):
        chain = middleware(chain)
    return SecurityMiddleware(chain)


@pytest.mark.django_db
def test_middleware_writes_do_not_leak_between_requests():
    def view(request: HttpRequest) -> HttpResponse:
        request.session["seen"] = request.path  # makes SessionMiddleware set its cookie
        return HANDLED

    chain = with_middleware(view)
    first = chain(_request("/first"))
    second = chain(_request("/second"))
    assert first is HANDLED and second is HANDLED
    assert list(HANDLED.items()) == []
    assert dict(HANDLED.cookies) == {}

    # A plain response through the same chain does get them: the middleware did write.
    def plain(request: HttpRequest) -> HttpResponse:
        request.session["seen"] = request.path
        return HttpResponse("ok")

    response = with_middleware(plain)(_request("/plain"))
    assert response["X-Request-Path"] == "/plain"
    assert response["X-Frame-Options"] == "DENY"
    assert {"last_path", "sessionid"} <= set(response.cookies)
