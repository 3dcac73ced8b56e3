"""Tests written as a project would write them: Django's TransactionTestCase, async test
methods, and only the public names of ``wsgroups.testing`` (and of ``wsgroups``).

They run under pytest with the rest of the suite, and under Django's own test runner
(``manage.py test tests.test_testing_usage``, which ``tests/test_testing.py`` runs).
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.test import TransactionTestCase, override_settings

from wsgroups import Group, WebSocket
from wsgroups.testing import Refused, connect

IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class WstestTests(TransactionTestCase):
    async def test_wstest_upgrades_with_cookies_and_headers_and_pushes(self) -> None:
        async with connect("/wstest", headers={"Origin": "http://allowed.example"}) as ws:
            self.assertEqual(ws.response.status_code, 101)
            self.assertEqual(ws.response.cookies["MyCookie1"].value, "123")
            self.assertEqual(ws.response.headers["MyHeader"], "MyHeaderData")
            self.assertEqual(await ws.receive(), "Hello WebSocket!")
            self.assertEqual(await ws.receive(), "Hello again WebSocket!")
            await ws.send("hi")
            self.assertEqual(await ws.receive(), "Here is the server push!")
        self.assertEqual(ws.close_code, 1000)

    async def test_a_view_response_refuses_the_upgrade(self) -> None:
        with self.assertRaises(Refused) as caught:
            async with connect("/reject"):
                self.fail("the upgrade was refused")
        response = caught.exception.response
        self.assertEqual(response.status_code, 418)
        self.assertEqual(response.content, b"you shall not pass")
        self.assertEqual(response.headers["X-Why"], "testing")

    async def test_a_foreign_origin_is_refused(self) -> None:
        with self.assertRaises(Refused) as caught:
            async with connect("/wstest", headers={"Origin": "http://evil.example"}):
                pass
        self.assertEqual(caught.exception.response.status_code, 403)

    async def test_login_required_redirects_and_user_logs_in(self) -> None:
        with self.assertRaises(Refused) as caught:
            async with connect("/private"):
                pass
        self.assertEqual(caught.exception.response.status_code, 302)
        user = await get_user_model().objects.acreate_user("ada", password="not used")
        async with connect("/private", user=user) as ws:
            self.assertEqual(ws.response.status_code, 101)
            await ws.send("who")
            self.assertEqual(await ws.receive(), "who")

    async def test_nothing_to_receive_names_the_timeout(self) -> None:
        async with connect("/ws/echo") as ws:
            await ws.receive()  # the view's hello
            with self.assertRaisesRegex(AssertionError, r"0\.2s"):
                await ws.receive(timeout=0.2)

    async def test_binary_frames_and_subprotocols(self) -> None:
        async with connect("/ws/echo?subprotocol=chat.v2", subprotocols=["chat.v1", "chat.v2"]) as ws:
            self.assertEqual(ws.response.headers["Sec-WebSocket-Protocol"], "chat.v2")
            await ws.receive()
            await ws.send(b"\x00\xff")
            self.assertEqual(await ws.receive(), b"\x00\xff")

    async def test_a_handler_closing_the_socket_gives_its_code_and_reason(self) -> None:
        async with connect("/ws/echo") as ws:
            await ws.receive()
            await ws.send("close:4009:enough for now")
            with self.assertRaises(AssertionError):
                await ws.receive()
        self.assertEqual((ws.close_code, ws.close_reason), (4009, "enough for now"))


class SocketIdTests(TransactionTestCase):
    async def test_websocket_and_group_reach_the_socket(self) -> None:
        async with connect("/ws/room") as first, connect("/ws/room") as second:
            hello = json.loads(await first.receive())
            self.assertEqual(hello["id"], first.id)
            await second.receive()
            self.assertTrue(await WebSocket(first.id).asend("by id"))
            self.assertEqual(await first.receive(), "by id")
            members = {ws.id for ws in await Group("room").asockets()}
            self.assertEqual(members, {first.id, second.id})
            self.assertEqual(await Group("room").abroadcast("to all", exclude=[second.id]), 1)
            self.assertEqual(await first.receive(), "to all")
            with self.assertRaises(AssertionError):
                await second.receive(timeout=0.2)
            await WebSocket(second.id).adisconnect("bye", 4000)
            with self.assertRaises(AssertionError):
                await second.receive()
            self.assertEqual((second.close_code, second.close_reason), (4000, "bye"))
            self.assertTrue(await WebSocket(second.id).ais_dead())
            self.assertFalse(await WebSocket(first.id).ais_dead())


@override_settings(ASGI_APPLICATION="tests.asgi.application")
class ConsumerTests(TransactionTestCase):
    async def test_upgrade_consumer_with_cookies_and_headers(self) -> None:
        async with connect("/consumer/upgrade") as ws:
            self.assertEqual(ws.response.cookies["ConsumerCookie"].value, "abc")
            self.assertEqual(ws.response.headers["X-Upgraded-By"], "consumer")
            hello = json.loads(await ws.receive())
            self.assertEqual(hello["id"], ws.id)
            await ws.send("to the echo handler")
            self.assertEqual(await ws.receive(), "to the echo handler")

    async def test_upgrade_consumer_rejection(self) -> None:
        with self.assertRaises(Refused) as caught:
            async with connect("/consumer/upgrade?reject"):
                pass
        self.assertEqual(caught.exception.response.status_code, 451)
        self.assertEqual(caught.exception.response.cookies["refused"].value, "1")

    @override_settings(CHANNEL_LAYERS=IN_MEMORY_LAYER)  # what Channels' own docs advise for tests
    async def test_stock_consumer_beside_the_views(self) -> None:
        user = await get_user_model().objects.acreate_user("grace", password="not used")
        async with connect("/consumer/stock", user=user) as ws:
            self.assertIsNone(ws.id)  # not a wsgroups socket
            self.assertEqual(ws.response.headers["X-Consumer"], "stock")
            self.assertEqual(json.loads(await ws.receive()), {"consumer": "stock", "user": "grace"})
            await ws.send("close:4100:done")
            with self.assertRaises(AssertionError):
                await ws.receive()
        self.assertEqual((ws.close_code, ws.close_reason), (4100, "done"))

    async def test_no_view_and_no_consumer_is_a_404(self) -> None:
        with self.assertRaises(Refused) as caught:
            async with connect("/no/such/place"):
                pass
        self.assertEqual(caught.exception.response.status_code, 404)


@override_settings(CHANNEL_LAYERS=IN_MEMORY_LAYER)
class InMemoryLayerTests(TransactionTestCase):
    async def test_ids_and_groups_work_on_the_in_memory_layer(self) -> None:
        async with connect("/ws/room") as ws:
            await ws.receive()
            self.assertTrue(await WebSocket(ws.id).asend("by id"))
            self.assertEqual(await ws.receive(), "by id")
            self.assertEqual(await Group("room").abroadcast("to all"), 1)
            self.assertEqual(await ws.receive(), "to all")
        self.assertTrue(await WebSocket(ws.id).ais_dead())
