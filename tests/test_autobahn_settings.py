from __future__ import annotations

from types import SimpleNamespace

from autobahn.websocket import protocol as autobahn_protocol

from wsgroups.servers.autobahn_settings import defer_debug_formatting, share_settings
from wsgroups.servers.daphne import WebSocketProtocol


def test_autobahn_formats_its_connection_settings_only_when_a_log_line_uses_them():
    defer_debug_formatting()
    formatted = []

    class Setting:
        def __repr__(self) -> str:
            formatted.append(1)
            return "<setting>"

    value = autobahn_protocol.pformat([("openHandshakeTimeout", Setting())])
    assert formatted == []  # what every connection pays while debug lines are not logged
    assert f"{value}" == "[('openHandshakeTimeout', <setting>)]" and formatted == [1]
    timings = autobahn_protocol.Timings()
    timings.track("open")
    assert str(timings).startswith("{'open': ")  # Timings' __str__ still returns a str


def test_autobahn_settings_are_class_attributes_not_copied_onto_each_connection():
    class Protocol(WebSocketProtocol):
        pass

    def accept(offers: list[str]) -> str:
        return f"accepted {offers}"

    factory = SimpleNamespace(**{name: f"{name}-value" for name in Protocol.CONFIG_ATTRS})
    factory.perMessageCompressionAccept = accept
    share_settings(Protocol, factory)
    assert Protocol.openHandshakeTimeout == "openHandshakeTimeout-value"
    connection = Protocol()
    assert connection.perMessageCompressionAccept(["x"]) == "accepted ['x']"  # not a method
    for name in Protocol.CONFIG_ATTRS:  # what autobahn's _connectionMade does per connection
        if not hasattr(connection, name):
            setattr(connection, name, getattr(factory, name))
    assert not set(Protocol.CONFIG_ATTRS) & set(vars(connection))
    other = SimpleNamespace(**{name: "other" for name in Protocol.CONFIG_ATTRS})
    share_settings(Protocol, other)  # another factory: its settings
    assert Protocol.openHandshakeTimeout == "other"
