"""The admin's socket actions against real servers: a staff user logs in over HTTP (with CSRF),
selects a live socket and sends to it or disconnects it; a WebSocket client sees the result.
And the admin's lists in Debian's headless Chromium, in a 1280-pixel window."""

from __future__ import annotations

import asyncio
import html
import json
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, build_opener

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import ROOT, Server, launch_chromium
from .wsclient import close_of

pytestmark = pytest.mark.e2e

USERNAME = "e2e-admin"
PASSWORD = "e2e-admin-password"
CHANGELIST = "/admin/wsgroups/connection/"


@pytest.fixture(scope="module")
def staff_user(base_env: dict[str, str]) -> str:
    """A superuser in the servers' database (the fixture may run again when pytest regroups tests)."""
    code = (
        "from django.contrib.auth import get_user_model; "
        f"user, _ = get_user_model().objects.get_or_create(username={USERNAME!r}); "
        "user.is_staff = user.is_superuser = True; "
        f"user.set_password({PASSWORD!r}); user.save()"
    )
    command = [sys.executable, "manage.py", "shell", "-c", code]
    subprocess.run(command, cwd=ROOT, env=base_env, check=True, capture_output=True, timeout=60)
    return USERNAME


class Forms(HTMLParser):
    """The ``<input>`` elements of each ``<form>`` of a page, as attribute dicts."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.forms: list[list[dict[str, str]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.forms.append([])
        elif tag == "input" and self.forms:
            self.forms[-1].append({name: value or "" for name, value in attrs})

    def with_input(self, name: str) -> list[dict[str, str]]:
        """The one form that has an input called ``name``."""
        (form,) = [form for form in self.forms if any(field.get("name") == name for field in form)]
        return form


class AdminBrowser:
    """Cookie-keeping HTTP client of one server's admin; HTTP errors raise ``HTTPError``."""

    def __init__(self, server: Server) -> None:
        self.base = server.http
        self.opener = build_opener(HTTPCookieProcessor(CookieJar()))

    def get(self, path: str) -> tuple[str, str]:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.geturl(), response.read().decode()

    def post(self, path: str, fields: list[tuple[str, str]]) -> tuple[str, str]:
        """POST ``fields``; redirects are followed, so this returns the final URL and page."""
        with self.opener.open(self.base + path, data=urlencode(fields).encode(), timeout=30) as response:
            return response.geturl(), response.read().decode()

    def log_in(self, username: str, password: str) -> None:
        _, page = self.get("/admin/login/?next=/admin/")
        form = Forms(page).with_input("csrfmiddlewaretoken")
        (token,) = [field["value"] for field in form if field.get("name") == "csrfmiddlewaretoken"]
        url, page = self.post(
            "/admin/login/?next=/admin/",
            [("csrfmiddlewaretoken", token), ("username", username), ("password", password), ("next", "/admin/")],
        )
        assert url == f"{self.base}/admin/", page
        assert "Log out" in page

    def wait_for_row(self, socket_id: int, state: str, timeout: float = 10) -> None:
        """Until the changelist shows socket ``socket_id`` in ``state`` (rows are written in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            _, page = self.get(f"{CHANGELIST}?{urlencode({'q': socket_id, 'state__exact': state})}")
            if f'name="_selected_action" value="{socket_id}"' in page:
                return
            assert time.monotonic() < deadline, f"socket {socket_id} never listed as {state}"
            time.sleep(0.05)

    def run_action(self, action: str, socket_id: int, values: dict[str, str]) -> str:
        """Choose ``action`` for the socket on the changelist, fill its form page, submit it;
        return the page the admin redirects to (with its messages)."""
        _, page = self.get(f"{CHANGELIST}?{urlencode({'q': socket_id})}")
        changelist_form = Forms(page).with_input("_selected_action")
        (token,) = [field["value"] for field in changelist_form if field.get("name") == "csrfmiddlewaretoken"]
        _, page = self.post(
            CHANGELIST,
            [
                ("csrfmiddlewaretoken", token),
                ("action", action),
                ("select_across", "0"),
                ("index", "0"),
                ("_selected_action", str(socket_id)),
            ],
        )
        action_form = Forms(page).with_input("apply")
        fields = [
            (field["name"], field["value"])
            for field in action_form
            if field.get("type") in ("hidden", "submit") and field.get("name")
        ]
        assert ("_selected_action", str(socket_id)) in fields and ("action", action) in fields
        url, page = self.post(CHANGELIST, fields + list(values.items()))
        assert url == f"{self.base}{CHANGELIST}", "the action did not redirect back to the list"
        return html.unescape(page)


async def _open_echo(server: Server) -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/echo")
    return ws, int(json.loads(await ws.recv())["id"])


def test_admin_sends_to_and_disconnects_a_live_socket(server: Server, staff_user: str) -> None:
    admin = AdminBrowser(server)
    admin.log_in(staff_user, PASSWORD)

    async def scenario() -> None:
        ws, socket_id = await _open_echo(server)
        await asyncio.to_thread(admin.wait_for_row, socket_id, "open")

        page = await asyncio.to_thread(
            admin.run_action, "send_message", socket_id, {"kind": "text", "message": "from admin"}
        )
        assert await asyncio.wait_for(ws.recv(), 10) == "from admin"
        assert "Message sent to 1 socket; 0 were already dead." in page

        page = await asyncio.to_thread(
            admin.run_action, "send_message", socket_id, {"kind": "hex", "message": "00 ff 41"}
        )
        assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\xffA"
        assert "Message sent to 1 socket; 0 were already dead." in page

        values = {"code": "4000", "reason": "closed from the admin"}
        page = await asyncio.to_thread(admin.run_action, "disconnect_sockets", socket_id, values)
        assert await close_of(ws) == (4000, "closed from the admin")
        assert "Closed 1 socket; 0 were already dead." in page

        await asyncio.to_thread(admin.wait_for_row, socket_id, "closed")
        page = await asyncio.to_thread(
            admin.run_action, "send_message", socket_id, {"kind": "text", "message": "too late"}
        )
        assert "Message sent to 0 sockets; 1 was already dead." in page

    asyncio.run(scenario())


def test_admin_of_one_server_reaches_a_socket_held_by_another(
    server: Server, server_factory: Callable[..., Server], staff_user: str
) -> None:
    other = server_factory("uvicorn" if server.kind == "daphne" else "daphne")
    admin = AdminBrowser(other)
    admin.log_in(staff_user, PASSWORD)

    async def scenario() -> None:
        ws, socket_id = await _open_echo(server)
        await asyncio.to_thread(admin.wait_for_row, socket_id, "open")
        page = await asyncio.to_thread(
            admin.run_action, "send_message", socket_id, {"kind": "text", "message": "across"}
        )
        assert await asyncio.wait_for(ws.recv(), 10) == "across"
        assert "Message sent to 1 socket; 0 were already dead." in page
        page = await asyncio.to_thread(
            admin.run_action, "disconnect_sockets", socket_id, {"code": "4001", "reason": "bye"}
        )
        assert await close_of(ws) == (4001, "bye")
        assert "Closed 1 socket; 0 were already dead." in page

    asyncio.run(scenario())


def test_admin_rejects_a_post_without_csrf_token(server: Server, staff_user: str) -> None:
    admin = AdminBrowser(server)
    admin.log_in(staff_user, PASSWORD)
    with pytest.raises(HTTPError) as caught:
        admin.post(CHANGELIST, [("action", "send_message"), ("index", "0"), ("_selected_action", "1")])
    assert caught.value.code == 403


#: Where the last column of an admin list is, and whether anything is cut off on the right.
RESULTS_GEOMETRY = """() => {
  const table = document.getElementById("result_list");
  const box = table.closest(".results");
  const headers = [...table.querySelectorAll("thead th")];
  const last = headers[headers.length - 1];
  window.scrollTo(0, last.getBoundingClientRect().top + window.scrollY - 100);  // vertically only
  const rect = last.getBoundingClientRect();
  const hit = document.elementFromPoint(rect.right - 2, rect.top + rect.height / 2);
  return {
    header: last.textContent.trim(),
    left: rect.left,
    right: rect.right,
    viewport: document.documentElement.clientWidth,
    boxRight: box.getBoundingClientRect().right,
    boxOverflow: box.scrollWidth - box.clientWidth,
    pageOverflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    lastHeaderShown: hit !== null && last.contains(hit),
    rows: table.querySelectorAll("tbody tr").length,
  };
}"""


def test_admin_lists_fit_a_1280_pixel_window(server: Server, staff_user: str) -> None:
    # Closed rows with a close code, the widest state.
    admin = AdminBrowser(server)
    admin.log_in(staff_user, PASSWORD)

    async def closed_sockets() -> list[int]:
        ids = []
        for code in (4000, 1000):
            ws, socket_id = await _open_echo(server)
            await ws.close(code, "done")
            ids.append(socket_id)
        return ids

    for socket_id in asyncio.run(closed_sockets()):
        admin.wait_for_row(socket_id, "closed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{server.http}/admin/login/?next=/admin/")
        page.fill("#id_username", staff_user)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{server.http}/admin/")
        for changelist, last_header in ((CHANGELIST, "Opened at"), ("/admin/wsgroups/process/", "Started at")):
            page.goto(f"{server.http}{changelist}")
            geometry = page.evaluate(RESULTS_GEOMETRY)
            assert geometry["rows"] >= 1, geometry
            assert " ".join(geometry["header"].split()).lower().endswith(last_header.lower()), geometry
            # The last column's header is wholly inside the window and not clipped by the
            # results box; neither the box nor the page scrolls sideways.
            assert 0 <= geometry["left"] < geometry["right"] <= geometry["viewport"], geometry
            assert geometry["right"] <= geometry["boxRight"] + 0.5, geometry
            assert geometry["boxOverflow"] <= 0 and geometry["pageOverflow"] <= 0, geometry
            assert geometry["lastHeaderShown"], geometry
        browser.close()
