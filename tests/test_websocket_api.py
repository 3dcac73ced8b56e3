from __future__ import annotations

import asyncio
import operator

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from wsgroups import HANDLED, Group, WebSocket
from wsgroups.codes import CloseCode, ConnectionFlags
from wsgroups.ids import MAX_ID, make_id
from wsgroups.runtime import current_runtime
from wsgroups.websocket import frame_message

UNHELD_ID = make_id(987_654, 321)


# --- frame_message ------------------------------------------------------------------


def test_str_becomes_text_frame():
    assert frame_message("héllo", None) == {"type": "websocket.send", "text": "héllo"}


def test_bytes_become_binary_frame():
    assert frame_message(b"\x00\xff", None) == {"type": "websocket.send", "bytes": b"\x00\xff"}


@pytest.mark.parametrize("data", [bytearray(b"ab"), memoryview(b"ab")])
def test_bytes_like_become_binary_frame_of_bytes(data):
    message = frame_message(data, None)
    assert message == {"type": "websocket.send", "bytes": b"ab"}
    assert type(message["bytes"]) is bytes


def test_is_text_false_sends_str_as_utf8_binary():
    assert frame_message("é", False) == {"type": "websocket.send", "bytes": "é".encode()}


def test_is_text_true_sends_utf8_bytes_as_text():
    assert frame_message("é€".encode(), True) == {"type": "websocket.send", "text": "é€"}


def test_is_text_true_keeps_str_text_and_false_keeps_bytes_binary():
    assert frame_message("a", True) == {"type": "websocket.send", "text": "a"}
    assert frame_message(b"a", False) == {"type": "websocket.send", "bytes": b"a"}


@pytest.mark.parametrize("data", [b"\xff", b"\xc3", b"ok\xed\xa0\x80"])
def test_invalid_utf8_bytes_as_text_raise_value_error_naming_data(data):
    with pytest.raises(ValueError, match=r"^data"):
        frame_message(data, True)


@pytest.mark.parametrize("data", [None, 1, 1.5, ["a"], {"a": 1}])
def test_other_types_raise_type_error(data):
    with pytest.raises(TypeError, match="data"):
        frame_message(data, None)


# --- WebSocket(id) ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 2**53, MAX_ID + 1, "abc"])
def test_websocket_rejects_invalid_ids(bad):
    with pytest.raises(ValueError, match=r"^id"):
        WebSocket(bad)


@pytest.mark.parametrize("bad", [True, 1.0, None])
def test_websocket_rejects_non_integer_ids(bad):
    with pytest.raises(TypeError, match=r"^id"):
        WebSocket(bad)


def test_websocket_id_int_and_index():
    ws = WebSocket(UNHELD_ID)
    assert ws.id == UNHELD_ID
    assert int(ws) == UNHELD_ID
    assert operator.index(ws) == UNHELD_ID


def test_websocket_from_decimal_string():
    assert WebSocket(str(UNHELD_ID)).id == UNHELD_ID


def test_websocket_equality_and_hash_by_id():
    a, b, c = WebSocket(UNHELD_ID), WebSocket(str(UNHELD_ID)), WebSocket(UNHELD_ID + 1)
    assert a == b
    assert a is not b
    assert hash(a) == hash(b)
    assert a != c
    assert a != UNHELD_ID
    assert len({a, b, c}) == 2


# --- a WebSocket that no process holds ----------------------------------------------


@pytest.fixture
def unheld(transactional_db):
    runtime = current_runtime()
    if runtime is not None:
        assert UNHELD_ID not in runtime.table.by_id
    return WebSocket(UNHELD_ID)


def test_send_to_unheld_socket_returns_false(unheld):
    assert unheld.send("hi") is False
    assert unheld.send(b"hi") is False
    assert unheld.send("hi", flags=ConnectionFlags.DISCONNECT_AFTER_SEND) is False


def test_send_to_unheld_socket_still_validates_arguments(unheld):
    with pytest.raises(TypeError):
        unheld.send(123)
    with pytest.raises(ValueError):
        unheld.send(b"\xff", is_text=True)
    with pytest.raises(TypeError, match="flags"):
        unheld.send("hi", flags=True)


def test_unheld_socket_is_dead(unheld):
    assert unheld.is_dead() is True
    assert unheld.group is None
    assert unheld.session is None


def test_disconnect_unheld_socket_returns_false(unheld):
    assert unheld.disconnect() is False
    assert unheld.disconnect("bye", code=CloseCode.GOING_AWAY) is False
    assert unheld.disconnect("x" * 123) is False


@pytest.mark.parametrize("code", [1005, 1006, 1004, 999, 5000])
def test_disconnect_with_unsendable_code_raises(unheld, code):
    with pytest.raises(ValueError, match=r"^code"):
        unheld.disconnect(code=code)


def test_disconnect_with_too_long_reason_raises(unheld):
    with pytest.raises(ValueError, match=r"^message"):
        unheld.disconnect("x" * 124)
    with pytest.raises(ValueError, match=r"^message"):
        unheld.disconnect("é" * 62)


def test_async_variants_on_unheld_socket(unheld):
    async def run():
        return await unheld.asend("hi"), await unheld.adisconnect(), await unheld.ais_dead()

    assert asyncio.run(run()) == (False, False, True)


def test_websocket_current_is_none_outside_handlers():
    assert WebSocket.current is None
    assert WebSocket(UNHELD_ID).current is None


# --- Group --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", None, 5])
def test_group_rejects_empty_or_non_str_name(name):
    with pytest.raises(ValueError, match=r"^name"):
        Group(name)


def test_group_keeps_name():
    assert Group("chat").name == "chat"


def test_group_validates_close_arguments():
    with pytest.raises(ValueError, match=r"^code"):
        Group("chat").disconnect(code=1006)
    with pytest.raises(ValueError, match=r"^message"):
        Group("chat").disconnect("x" * 124)


# --- HANDLED ------------------------------------------------------------------------


def test_handled_is_an_http_response():
    assert isinstance(HANDLED, HttpResponse)
    assert repr(HANDLED) == "HANDLED"


def test_headers_written_to_handled_do_not_stick():
    HANDLED["X-A"] = "1"
    assert "X-A" not in HANDLED
    assert HANDLED.get("X-A") is None
    HANDLED.headers["X-B"] = "2"
    assert "X-B" not in HANDLED.headers


def test_handled_headers_never_leak_into_items():
    HANDLED["Vary"] = "Cookie"
    HANDLED.headers["X-Frame-Options"] = "DENY"
    assert list(HANDLED.items()) == []


def test_cookies_assigned_on_handled_cookies_do_not_stick():
    HANDLED.cookies["a"] = "b"
    assert len(HANDLED.cookies) == 0


def test_set_cookie_on_handled_does_not_stick():
    HANDLED.set_cookie("a", "b")
    assert len(HANDLED.cookies) == 0


def test_delete_cookie_on_handled_does_not_stick():
    HANDLED.delete_cookie("a")
    assert len(HANDLED.cookies) == 0


def test_session_middleware_passes_handled_through_when_session_changed():
    def upgrade_view(request):
        request.session["nickname"] = "bob"
        return HANDLED

    engine = "django.contrib.sessions.backends.signed_cookies"
    with override_settings(SESSION_ENGINE=engine):
        response = SessionMiddleware(upgrade_view)(RequestFactory().get("/ws/chat/lobby"))
    assert response is HANDLED
