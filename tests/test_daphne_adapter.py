from __future__ import annotations

import pytest

from wsgroups.handshake import serialize_response


def split(raw: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "response has no end of headers"
    status_line, *header_lines = head.split(b"\r\n")
    return status_line, header_lines, body


def test_status_line_uses_given_reason_phrase():
    raw = serialize_response(500, [], "WebSocket upgrade on /x was not approved.", b"")
    status_line, _, _ = split(raw)
    assert status_line == b"HTTP/1.1 500 WebSocket upgrade on /x was not approved."


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(403, b"Forbidden"), (404, b"Not Found"), (500, b"Internal Server Error"), (200, b"OK")],
)
def test_standard_phrase_when_reason_is_none(status, phrase):
    status_line, _, _ = split(serialize_response(status, [], None, b""))
    assert status_line == b"HTTP/1.1 %d %s" % (status, phrase)


def test_unregistered_status_gets_a_phrase():
    status_line, _, _ = split(serialize_response(599, [], None, b""))
    assert status_line.startswith(b"HTTP/1.1 599 ")
    assert len(status_line) > len(b"HTTP/1.1 599 ")


def test_content_length_added_when_absent_and_body_follows():
    raw = serialize_response(403, [(b"Content-Type", b"text/plain")], None, b"denied!")
    _, headers, body = split(raw)
    assert headers == [b"Content-Type: text/plain", b"Content-Length: 7"]
    assert body == b"denied!"


def test_empty_body_gets_content_length_zero():
    _, headers, body = split(serialize_response(403, [], None, b""))
    assert headers == [b"Content-Length: 0"]
    assert body == b""


@pytest.mark.parametrize("name", [b"Content-Length", b"content-length"])
def test_content_length_kept_when_given(name):
    raw = serialize_response(403, [(name, b"4")], None, b"nope")
    _, headers, body = split(raw)
    assert headers == [name + b": 4"]
    assert body == b"nope"


def test_several_set_cookie_headers_kept_in_order():
    headers = [
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"X-Other", b"x"),
        (b"Set-Cookie", b"b=2"),
        (b"Set-Cookie", b"c=3; HttpOnly"),
    ]
    _, lines, _ = split(serialize_response(401, headers, None, b""))
    assert [line for line in lines if line.startswith(b"Set-Cookie: ")] == [
        b"Set-Cookie: a=1; Path=/",
        b"Set-Cookie: b=2",
        b"Set-Cookie: c=3; HttpOnly",
    ]
    assert lines[1] == b"X-Other: x"


def test_whole_response_bytes():
    raw = serialize_response(418, [(b"X-A", b"1")], "Teapot here", b"hi")
    assert raw == b"HTTP/1.1 418 Teapot here\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi"


def test_non_latin1_reason_does_not_raise_and_stays_one_line():
    raw = serialize_response(500, [], "caf\xe9 \u20ac", b"")
    status_line, _, _ = split(raw)
    assert status_line.startswith(b"HTTP/1.1 500 caf\xe9 ")


@pytest.mark.parametrize("bad", [b"\r", b"\n", b"\x00", b"\r\n"])
def test_cr_lf_nul_in_header_name_raises(bad):
    with pytest.raises(ValueError, match="header name"):
        serialize_response(403, [(b"X-A" + bad + b"Evil", b"1")], None, b"")


@pytest.mark.parametrize("bad", [b"\r", b"\n", b"\x00", b"\r\n"])
def test_cr_lf_nul_in_header_value_raises(bad):
    with pytest.raises(ValueError, match="header value"):
        serialize_response(403, [(b"X-A", b"1" + bad + b"Set-Cookie: evil=1")], None, b"")


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\r\n"])
def test_cr_lf_nul_in_reason_raises(bad):
    with pytest.raises(ValueError, match="reason phrase"):
        serialize_response(403, [], "Denied" + bad + "X-Evil: 1", b"")


@pytest.mark.parametrize(("name", "value"), [("X-A", b"1"), (b"X-A", "1")])
def test_str_header_parts_raise(name, value):
    with pytest.raises(ValueError, match="must be bytes"):
        serialize_response(403, [(name, value)], None, b"")


@pytest.mark.parametrize("status", [101, 700, 99, 600, 0, -403, "403", 403.0])
def test_invalid_status_raises(status):
    with pytest.raises(ValueError, match="status"):
        serialize_response(status, [], None, b"")


# --- permessage-deflate -------------------------------------------------------------------


def deflate_offer(params: dict[str, list[object]]) -> object:
    from autobahn.websocket.compress import PerMessageDeflateOffer

    return PerMessageDeflateOffer.parse(params)


@pytest.mark.parametrize(
    ("params", "window"),
    [({}, 12), ({"server_max_window_bits": ["10"]}, 10), ({"server_max_window_bits": ["15"]}, 12)],
)
def test_offer_accepted_with_a_bounded_server_window_and_inflated_message(settings, params, window):
    from wsgroups.servers.daphne import DEFLATE_MEM_LEVEL, answer_offers

    settings.WSGROUPS = {**settings.WSGROUPS, "MAX_MESSAGE_SIZE": 5000, "PERMESSAGE_DEFLATE": True}
    accept = answer_offers([deflate_offer(params)])
    assert accept is not None
    assert (accept.window_bits, accept.mem_level, accept.max_message_size) == (window, DEFLATE_MEM_LEVEL, 5000)
    assert accept.request_max_window_bits == 0  # the client's window is its own choice
    assert accept.get_extension_string().startswith("permessage-deflate")


def test_only_permessage_deflate_offers_are_accepted(settings):
    from wsgroups.servers.daphne import answer_offers

    settings.WSGROUPS = {**settings.WSGROUPS, "PERMESSAGE_DEFLATE": True}
    assert answer_offers([]) is None
    assert answer_offers([object()]) is None


@pytest.mark.parametrize(("setting", "accepts"), [(True, True), (False, False)])
def test_offers_are_answered_as_set(settings, setting, accepts):
    from wsgroups.servers.daphne import answer_offers

    settings.WSGROUPS = {**settings.WSGROUPS, "PERMESSAGE_DEFLATE": setting}
    assert (answer_offers([deflate_offer({})]) is not None) is accepts


def test_install_defers_autobahns_debug_formatting():
    from autobahn.websocket import protocol as autobahn_protocol

    from wsgroups.servers import daphne
    from wsgroups.servers.autobahn_settings import DeferredFormat

    daphne.install()
    assert autobahn_protocol.pformat is DeferredFormat


def test_websocket_applications_receive_from_a_lean_queue_with_the_response_extension():
    import asyncio

    from wsgroups.servers.daphne import RESPONSE_EXTENSION, WebSocketProtocol, _advertise_response_extension
    from wsgroups.servers.queues import ReceiveQueue

    class Server:
        def __init__(self):
            self.connections = {}
            self.scopes = []
            self.http = []

        async def application(self, scope, receive, send):
            self.scopes.append(scope)
            self.received = await receive()

        def create_application(self, protocol, scope):  # daphne's, for HTTP
            self.http.append(scope)
            return "daphne's queue"

        async def handle_reply(self, protocol, message):
            pass

    async def server_app(scope, receive, send):
        await receive()

    async def main():
        server = Server()
        _advertise_response_extension(server)
        protocol = WebSocketProtocol()
        server.connections[protocol] = {}
        queue = server.create_application(protocol, {"type": "websocket", "path": "/ws"})
        assert isinstance(queue, ReceiveQueue)
        queue.put_nowait({"type": "websocket.connect"})
        await asyncio.wait_for(server.connections[protocol]["application_instance"], 1)
        assert server.received == {"type": "websocket.connect"}
        [scope] = server.scopes
        assert scope["asgi"] == {"version": "3.0"} and RESPONSE_EXTENSION in scope["extensions"]
        assert server.create_application(object(), {"type": "http"}) == "daphne's queue"  # HTTP: daphne's own
        made = []
        server.application = lambda **kwargs: made.append(server_app(**kwargs)) or made[-1]
        gone = WebSocketProtocol()  # the client left while its application was being made
        assert server.create_application(gone, {"type": "websocket", "path": "/ws"}) is None
        assert made[0].cr_frame is None  # closed, not left to warn that it was never awaited

    asyncio.run(main())
