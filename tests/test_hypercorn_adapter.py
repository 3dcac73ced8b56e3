"""wsgroups.servers.hypercorn: PERMESSAGE_DEFLATE decides whether hypercorn's handshake takes the offer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings
from hypercorn.protocol.ws_stream import Handshake

from wsgroups.servers import hypercorn as adapter

REQUEST = [
    (b"host", b"127.0.0.1"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
]


@pytest.fixture
def installed() -> Iterator[None]:
    saved = {name: Handshake.__dict__[name] for name in ("accept", "_wsgroups_adapted") if name in Handshake.__dict__}
    try:
        adapter.install()
        yield
    finally:
        for name in ("accept", "_wsgroups_adapted"):
            if name in saved:
                setattr(Handshake, name, saved[name])
            elif name in Handshake.__dict__:
                delattr(Handshake, name)


def extensions_answered(deflate: bool, stock: bool = False) -> list[bytes]:
    handshake = Handshake(REQUEST, "1.1")
    accept = getattr(Handshake.accept, "__wrapped__", Handshake.accept) if stock else Handshake.accept
    with override_settings(WSGROUPS={**settings.WSGROUPS, "PERMESSAGE_DEFLATE": deflate}):
        status, headers, _ = accept(handshake, None, [])
    assert status == 101
    return [value for name, value in headers if name == b"sec-websocket-extensions"]


def test_stock_hypercorn_always_takes_the_offer():
    assert len(extensions_answered(False, stock=True)) == 1  # the reason for the adapter


def test_setting_off_ignores_the_offer(installed):
    assert extensions_answered(False) == []


def test_setting_on_keeps_hypercorns_negotiation(installed):
    (answer,) = extensions_answered(True)
    assert answer.startswith(b"permessage-deflate")


def test_install_is_idempotent(installed):
    accept = Handshake.accept
    adapter.install()
    assert Handshake.accept is accept
