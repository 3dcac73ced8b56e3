"""Security rules against real servers: who may act on sockets from the admin, what the logs
never contain, and that socket IDs are capabilities for server code only."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from urllib.error import HTTPError
from urllib.parse import quote, urlencode

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import ROOT, Server
from .test_e2e_admin import CHANGELIST, PASSWORD, AdminBrowser, Forms, staff_user
from .wsclient import close_of, raw_handshake

pytestmark = pytest.mark.e2e

__all__ = ["staff_user"]  # the fixture, shared with test_e2e_admin

PLAIN_USER = "e2e-plain"
VIEWER = "e2e-viewer"


def _shell(env: dict[str, str], code: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def users(base_env: dict[str, str]) -> dict[str, str]:
    """A non-staff user with a logged-in session (its key), and a staff user who may only view sockets."""
    code = f"""
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.backends.db import SessionStore
User = get_user_model()
plain, _ = User.objects.get_or_create(username={PLAIN_USER!r})
plain.is_staff = plain.is_superuser = False
plain.set_password({PASSWORD!r}); plain.save()
viewer, _ = User.objects.get_or_create(username={VIEWER!r})
viewer.is_staff, viewer.is_superuser = True, False
viewer.set_password({PASSWORD!r}); viewer.save()
viewer.user_permissions.set([Permission.objects.get(codename="view_connection")])
session = SessionStore()
session[SESSION_KEY] = str(plain.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = plain.get_session_auth_hash()
session.create()
print(session.session_key)
"""
    return {"plain_session": _shell(base_env, code)}


class Browser(AdminBrowser):
    """An admin browser whose cookies can be set by hand."""

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def set_cookie(self, name: str, value: str) -> None:
        self.jar.set_cookie(
            http.cookiejar.Cookie(
                0, name, value, None, False, "127.0.0.1", False, False, "/", True, False, None, False, None, None, {}
            )
        )

    def cookie(self, name: str) -> str:
        (value,) = [cookie.value for cookie in self.jar if cookie.name == name]
        return str(value)

    def csrf_token(self) -> str:
        _, page = self.get("/admin/login/")
        form = Forms(page).with_input("csrfmiddlewaretoken")
        (token,) = [field["value"] for field in form if field.get("name") == "csrfmiddlewaretoken"]
        return token


def _action_fields(token: str, action: str, socket_id: int) -> list[tuple[str, str]]:
    """The intermediate form of ``action`` as submitted: selection, apply, and the form's values."""
    values = {"send_message": [("kind", "text"), ("message", "from an intruder")]}.get(
        action, [("code", "4000"), ("reason", "closed by an intruder")]
    )
    return [
        ("csrfmiddlewaretoken", token),
        ("action", action),
        ("index", "0"),
        ("select_across", "0"),
        ("_selected_action", str(socket_id)),
        ("apply", "Go"),
        *values,
    ]


async def _open_echo(server: Server) -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/echo")
    return ws, int(json.loads(await ws.recv())["id"])


async def _untouched(ws: ClientConnection) -> None:
    """Nothing reached the socket: after a pause, the next frame is the echo of a probe."""
    await asyncio.sleep(1.0)
    await ws.send("~probe")
    assert await asyncio.wait_for(ws.recv(), 10) == "~probe"


def _refused_actions(server: Server, browser: Browser, socket_id: int) -> list[tuple[str, str, str]]:
    """Post both actions for ``socket_id``; return (action, final URL, page) for each."""
    outcomes = []
    for action in ("send_message", "disconnect_sockets"):
        token = browser.cookie("csrftoken")
        url, page = browser.post(CHANGELIST, _action_fields(token, action, socket_id))
        outcomes.append((action, url, page))
    return outcomes


def _listed(browser: Browser, socket_id: int, timeout: float = 10) -> str:
    """The changelist page once it lists the open socket (rows are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        _, page = browser.get(f"{CHANGELIST}?{urlencode({'q': socket_id, 'state__exact': 'open'})}")
        if f">{socket_id}<" in page:
            return page
        assert time.monotonic() < deadline, f"socket {socket_id} never listed as open"
        time.sleep(0.05)


def test_a_non_staff_user_cannot_log_in_to_the_admin_or_act_on_sockets(server: Server, users: dict[str, str]) -> None:
    browser = Browser(server)
    token = browser.csrf_token()
    _, page = browser.post(
        "/admin/login/?next=/admin/",
        [("csrfmiddlewaretoken", token), ("username", PLAIN_USER), ("password", PASSWORD), ("next", "/admin/")],
    )
    assert "staff account" in page and "Log out" not in page

    browser.set_cookie("sessionid", users["plain_session"])  # logged in, as on any other page of the site

    async def scenario() -> None:
        ws, socket_id = await _open_echo(server)
        async with ws:
            outcomes = await asyncio.to_thread(_refused_actions, server, browser, socket_id)
            for action, url, page in outcomes:
                assert url.startswith(f"{server.http}/admin/login/"), (action, url)
                assert "Message sent to" not in page and "already dead" not in page
            await _untouched(ws)

    asyncio.run(scenario())


def test_staff_without_the_change_permission_cannot_act_on_sockets(server: Server, users: dict[str, str]) -> None:
    browser = Browser(server)
    browser.log_in(VIEWER, PASSWORD)

    async def scenario() -> None:
        ws, socket_id = await _open_echo(server)
        async with ws:
            listing = await asyncio.to_thread(_listed, browser, socket_id)
            assert "send_message" not in listing and "disconnect_sockets" not in listing
            outcomes = await asyncio.to_thread(_refused_actions, server, browser, socket_id)
            for action, url, page in outcomes:
                assert url.startswith(f"{server.http}{CHANGELIST}"), (action, url)
                assert "Message sent to" not in page and "already dead" not in page, action
            await _untouched(ws)

    asyncio.run(scenario())


def test_an_action_submitted_with_a_forged_or_missing_csrf_token_is_refused(server: Server, staff_user: str) -> None:
    browser = Browser(server)
    browser.log_in(staff_user, PASSWORD)

    async def scenario() -> None:
        ws, socket_id = await _open_echo(server)
        async with ws:
            await asyncio.to_thread(browser.wait_for_row, socket_id, "open")
            for action in ("send_message", "disconnect_sockets"):
                for token in ("", secrets.token_urlsafe(48)[:64]):
                    fields = _action_fields(token, action, socket_id)
                    if not token:
                        fields = fields[1:]
                    with pytest.raises(HTTPError) as caught:
                        await asyncio.to_thread(browser.post, CHANGELIST, fields)
                    assert caught.value.code == 403
            await _untouched(ws)

    asyncio.run(scenario())


# --- logs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_debug_logs_never_contain_the_session_key_or_the_secret_key(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    secret = "test-secret-" + secrets.token_hex(24)
    server = server_factory(kind, extra_env={"WSGROUPS_LOG_LEVEL": "DEBUG", "DJANGO_SECRET_KEY": secret})
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{server.http}/set-session?name=carol", timeout=10).read()
    (session_key,) = [cookie.value for cookie in jar if cookie.name == "sessionid"]
    assert session_key
    cookie = {"Cookie": f"sessionid={session_key}"}

    async def scenario() -> tuple[int, int]:
        async with connect(f"{server.url}/ws/echo?session=1", additional_headers=cookie) as ws:
            await ws.recv()
            await ws.send("session")
            assert json.loads(await ws.recv()) == {"name": "carol"}  # the session is attached
            await ws.send("boom")
            boom = (await close_of(ws))[0]
        try:
            async with connect(
                f"{server.url}/ws/echo?session=1",
                additional_headers=cookie,
                origin="http://evil.example",  # type: ignore[arg-type]
            ):
                refused = 101
        except InvalidStatus as exc:
            refused = exc.response.status_code
        return boom, refused

    boom, refused = asyncio.run(scenario())
    assert (boom, refused) == (1011, 403)
    bad = raw_handshake(server.port, "/bad-header?name=Upgrade", cookie)
    bad.close()
    assert bad.status == 500
    new = raw_handshake(server.port, "/ws/echo?session=1")  # a new session: its key is on the 101
    new.close()
    (new_key,) = [value.split(";")[0].split("=", 1)[1] for value in new.header("Set-Cookie")]
    assert new.status == 101 and new_key

    deadline = time.monotonic() + 10
    wanted = ["handler failure requested by the test", "is not allowed", "Upgrade"]
    while not all(text in server.log() for text in wanted):
        assert time.monotonic() < deadline, f"the errors were not logged:\n{server.log()[-3000:]}"
        time.sleep(0.1)
    time.sleep(0.5)
    log = server.log()
    for name, value in (("session key", session_key), ("new session key", new_key), ("SECRET_KEY", secret)):
        assert value not in log, f"the {name} appears in the {kind} log"


# --- socket IDs are capabilities of server code -----------------------------------------------


async def _join(server: Server, room: str, nickname: str, query: str = "") -> tuple[ClientConnection, int]:
    url = f"{server.url}/ws/chat/{room}?nickname={quote(nickname)}{query}"
    ws = await connect(url)
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == "welcome":
            return ws, int(event["id"])


async def _drain(ws: ClientConnection, seconds: float) -> list[dict[str, object]]:
    """Events that reach ``ws`` within ``seconds`` (it must stay open)."""
    events = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except (TimeoutError, asyncio.TimeoutError):
            break
        except ConnectionClosed as exc:
            raise AssertionError(f"the socket was closed ({exc.rcvd})") from None
    return events


def test_a_chat_client_cannot_send_to_or_disconnect_another_socket_by_naming_its_id(
    server: Server, base_env: dict[str, str]
) -> None:
    room, other_room = f"sec{secrets.token_hex(4)}", f"far{secrets.token_hex(4)}"

    async def scenario() -> None:
        victim, victim_id = await _join(server, other_room, "victim")
        neighbour, neighbour_id = await _join(server, room, "neighbour")
        attacker, attacker_id = await _join(server, room, "attacker")
        await _drain(victim, 0.5)
        await _drain(neighbour, 0.5)
        payloads: list[str | bytes] = []
        for target in (victim_id, neighbour_id):
            payloads += [
                str(target),
                f"@{target} hello",
                f"close:1000:{target}",
                json.dumps({"type": "message", "to": target, "id": target, "text": "spoofed"}),
                json.dumps({"type": "disconnect", "id": target, "websocket_id": target}),
                json.dumps({"action": "send", "target": target, "text": "x", "room": other_room}),
                json.dumps([target, "disconnect"]),
                target.to_bytes(8, "big"),
                str(target).encode(),
            ]
        for payload in payloads:
            await attacker.send(payload)
            await asyncio.sleep(0.02)
        # The upgrade URL naming the IDs: the new socket gets its own ID and joins its own room.
        named = {"id": victim_id, "websocket_id": victim_id, "to": victim_id, "disconnect": neighbour_id}
        query = "&" + urlencode({**named, "room": other_room})
        intruder, intruder_id = await _join(server, room, str(victim_id), query)
        assert intruder_id not in (victim_id, neighbour_id, attacker_id)
        squatter, squatter_id = await _join(server, str(victim_id), str(neighbour_id))
        assert squatter_id not in (victim_id, neighbour_id)

        victim_events = await _drain(victim, 2.0)
        neighbour_events = await _drain(neighbour, 0.5)
        # Nothing crosses into the victim's room; the neighbour sees only what the room sends,
        # each message attributed to the socket that really sent it.
        assert victim_events == []
        assert {event["type"] for event in neighbour_events} <= {"message", "join", "online"}
        for event in neighbour_events:
            if event["type"] == "message":
                assert event["id"] == attacker_id and event["nickname"] == "attacker"
        texts = [event["text"] for event in neighbour_events if event["type"] == "message"]
        assert texts == [p.strip() for p in payloads if isinstance(p, str)]
        for ws in (victim, neighbour):
            await ws.send("still here")
        for ws in (attacker, intruder, squatter):
            await ws.close()
        await victim.close()
        await neighbour.close()

    asyncio.run(scenario())
