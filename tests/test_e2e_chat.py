"""The chat demo in a real headless Chromium, against ``manage.py demo`` (two servers,
wsbroadcast, the embedded Redis; with ``--worker``, a runworker too) whose console is a
pseudo-terminal, as when a newcomer runs ``./dev.sh demo``."""

from __future__ import annotations

import http.cookiejar
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from .conftest import ROOT, launch_chromium
from .services import free_port

pytestmark = pytest.mark.e2e

SCREENSHOTS = ROOT / "test-output"
BANNER = "wsgroups demo is running"


class Demo:
    """A running ``manage.py demo``; its stdout and stderr are a pseudo-terminal read as it runs."""

    def __init__(
        self, process: subprocess.Popen[bytes], ports: tuple[int, int], env: dict[str, str], marker: str, terminal: int
    ) -> None:
        self.process, self.ports, self.env, self.marker = process, ports, env, marker
        self.started = time.monotonic()
        self._terminal = terminal
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._terminal, 65536)
            except OSError:  # EIO: every process that wrote to the terminal is gone
                break
            if not data:
                break
            self._chunks.append(data)
        os.close(self._terminal)

    @property
    def output(self) -> str:
        """What the console has shown so far (the terminal's CR LF read as LF)."""
        return b"".join(self._chunks).decode(errors="replace").replace("\r\n", "\n")

    def password(self) -> str:
        found = re.search(r"user: demo\s+password: (\S+)", self.output)
        assert found, self.output
        return found.group(1)

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}/"

    def children(self) -> list[int]:
        """PIDs of processes started with this demo's environment (found by a unique marker)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if self.marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def commands(self) -> dict[int, str]:
        """The command lines of this demo's processes, by PID."""
        found = {}
        for pid in self.children():
            try:
                found[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
        return found

    def shell(self, code: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self, timeout: float = 30) -> int:
        """Ctrl-C, as at the console; the exit status once the demo has exited and its console closed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        returncode = self.process.wait(timeout)
        self._reader.join(10)
        return returncode


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_demo(workdir: Path, *args: str) -> Demo:
    """``manage.py demo`` on free ports with its own database and embedded Redis, once its banner is out."""
    marker = f"wsgroups-demo-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "WSGROUPS_TEST_EVENTS", "WSGROUPS_HANDLER_MODE")
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SQLITE_PATH": str(workdir / "demo.sqlite3"),
        "WSGROUPS_REDIS_DIR": str(workdir / "redis"),
        "WSGROUPS_DEMO_MARKER": marker,
        "PYTHONUNBUFFERED": "1",
    }
    ports = (free_port(), free_port())
    terminal, console = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", str(ports[0]), "--second-port", str(ports[1]), *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=console,
    )
    os.close(console)
    demo = Demo(process, ports, env, marker, terminal)
    deadline = time.monotonic() + 90
    while BANNER not in demo.output:
        assert process.poll() is None, demo.output
        assert time.monotonic() < deadline, f"the demo did not start:\n{demo.output}"
        time.sleep(0.2)
    assert all(_listening(port) for port in ports), demo.output
    return demo


def stop_demo(demo: Demo, workdir: Path) -> None:
    """Stop the demo and whatever it left behind."""
    try:
        demo.stop()
    except subprocess.TimeoutExpired:
        demo.process.kill()
    for pid in demo.children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pidfile = workdir / "redis" / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("demo")
    running = start_demo(workdir)
    try:
        yield running
    finally:
        stop_demo(running, workdir)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def _join(page: object, url: str, nickname: str, room: str) -> str:
    page.goto(url)  # type: ignore[attr-defined]
    page.fill("#nickname", nickname)  # type: ignore[attr-defined]
    page.fill("#room", room)  # type: ignore[attr-defined]
    page.click("#join")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "document.getElementById('my-id').textContent !== '\\u2013'"  # the page's placeholder: an en dash
    )
    return str(page.text_content("#my-id"))  # type: ignore[attr-defined]


def _wait_text(page: object, selector: str, text: str, timeout: float = 10_000) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "([selector, text]) => document.querySelector(selector).textContent.includes(text)",
        arg=[selector, text],
        timeout=timeout,
    )


def _admin_log_in(page: object, base: str, password: str) -> None:
    """Log in to the demo's admin as ``demo`` with the password its banner printed."""
    page.goto(f"{base}admin/login/?next=/admin/")  # type: ignore[attr-defined]
    page.fill("#id_username", "demo")  # type: ignore[attr-defined]
    page.fill("#id_password", password)  # type: ignore[attr-defined]
    page.click("input[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{base}admin/")  # type: ignore[attr-defined]


def _admin_send(page: object, base: str, socket_id: str, kind: str, message: str) -> None:
    """The admin's "Send a message…" action on one socket, clicked through as a person would."""
    checkbox = f"input[name=_selected_action][value='{socket_id}']"
    deadline = time.monotonic() + 10
    while True:  # the registry row is written a moment after the socket opens
        page.goto(f"{base}admin/wsgroups/connection/?q={socket_id}")  # type: ignore[attr-defined]
        if page.locator(checkbox).count():  # type: ignore[attr-defined]
            break
        assert time.monotonic() < deadline, f"socket {socket_id} is not in the admin's list"
        time.sleep(0.2)
    page.check(checkbox)  # type: ignore[attr-defined]
    page.select_option("select[name=action]", "send_message")  # type: ignore[attr-defined]
    page.click("button[name=index]")  # type: ignore[attr-defined]
    page.check(f"input[name=kind][value={kind}]")  # type: ignore[attr-defined]
    page.fill("textarea[name=message]", message)  # type: ignore[attr-defined]
    page.click("input[name=apply]")  # type: ignore[attr-defined]
    page.wait_for_selector("ul.messagelist")  # type: ignore[attr-defined]
    _wait_text(page, "ul.messagelist", "Message sent to 1 socket; 0 were already dead.")


def test_two_tabs_on_two_servers_chat_across_processes(demo: Demo, browser: object) -> None:
    # Separate contexts: cookies are per host, whatever the port. Alice's browser is in India.
    alice_page = browser.new_context(timezone_id="Asia/Kolkata").new_page()  # type: ignore[attr-defined]
    bob_page, carol_page = (browser.new_context().new_page() for _ in range(2))  # type: ignore[attr-defined]
    alice = _join(alice_page, demo.url(0), "alice", "lobby")
    bob = _join(bob_page, demo.url(1), "bob", "lobby")
    carol = _join(carol_page, demo.url(0), "carol", "attic")
    assert len({alice, bob, carol}) == 3

    # Each sees the other online, with IDs, across the two server processes.
    _wait_text(alice_page, "#online", "bob")
    _wait_text(alice_page, "#online", f"#{bob}")
    _wait_text(bob_page, "#online", f"#{alice}")
    _wait_text(alice_page, "#log", "bob joined.")

    alice_page.fill("#text", "hello from 8000")
    alice_page.click("#send")
    _wait_text(bob_page, "#log", "alicehello from 8000")
    bob_page.fill("#text", "hello back from 8001")
    bob_page.click("#send")
    _wait_text(alice_page, "#log", "bobhello back from 8001")
    # The sender sees its own message once, locally.
    mine = alice_page.eval_on_selector_all(
        "#log li.mine", "items => items.map(li => li.textContent.slice(li.querySelector('time').textContent.length))"
    )
    assert mine == ["alicehello from 8000"]

    # Every line has the time of its event (the server's, for what came from the server), in
    # the browser's time zone: UTC+05:30 for Alice.
    stamps = alice_page.eval_on_selector_all(
        "#log li",
        "items => items.map(li => [li.querySelector('time')?.dateTime, li.querySelector('time')?.textContent])",
    )
    assert len(stamps) == 4, stamps  # joined, bob joined, her message, his
    now = datetime.now(timezone.utc)
    for iso, shown in stamps:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        assert abs((now - when).total_seconds()) < 120, (iso, now)
        assert shown == when.astimezone(timezone(timedelta(hours=5, minutes=30))).strftime("%H:%M")

    # The nickname cookie set on the 101 is visible to the page.
    assert "chat_nickname=alice" in alice_page.evaluate("document.cookie")

    SCREENSHOTS.mkdir(exist_ok=True)
    alice_page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)
    assert (SCREENSHOTS / "chat.png").stat().st_size > 10_000

    # Another room hears nothing of the lobby.
    assert "hello" not in carol_page.text_content("#log")
    assert "bob" not in carol_page.text_content("#online")

    bob_page.close()
    _wait_text(alice_page, "#log", "bob left.")
    alice_page.wait_for_function("!document.getElementById('online').textContent.includes('bob')")


def test_notify_reaches_every_tab_of_the_logged_in_user_on_both_servers(demo: Demo, browser: object) -> None:
    context = browser.new_context()  # type: ignore[attr-defined]
    first, second = context.new_page(), context.new_page()
    _admin_log_in(first, demo.url(0), demo.password())  # the session cookie is the host's, on both ports
    _join(first, demo.url(0), "dee", "notices")
    _join(second, demo.url(1), "dee-too", "elsewhere")
    stranger = browser.new_context().new_page()  # type: ignore[attr-defined]
    _join(stranger, demo.url(1), "stranger", "notices")
    assert stranger.locator("#notify").count() == 0  # only for a logged-in user

    first.click("#notify")
    for page in (first, second):
        _wait_text(page, "#log", "A notice for demo.")
    stranger.fill("#text", "after the notice")
    stranger.click("#send")
    _wait_text(first, "#log", "after the notice")
    assert "A notice" not in stranger.text_content("#log")
    context.close()


def test_the_page_has_its_own_icon_and_no_request_fails(demo: Demo, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    failed: list[tuple[int, str]] = []
    page.on(
        "response", lambda response: failed.append((response.status, response.url)) if response.status >= 400 else None
    )
    page.on("requestfailed", lambda request: failed.append((0, request.url)))
    page.goto(demo.url(0))
    page.wait_for_load_state("networkidle")
    # An inline icon: the browser asks the server for no /favicon.ico (which would be a 404).
    href = page.get_attribute("link[rel=icon]", "href")
    assert href is not None and href.startswith("data:image/svg+xml,")
    width = page.evaluate(
        "href => new Promise((ok, fail) => { const img = new Image(); img.onload = () => ok(img.naturalWidth); "
        "img.onerror = () => fail(new Error('not an image')); img.src = href; })",
        href,
    )
    assert width == 16
    assert failed == []
    page.close()


def test_refusals_are_visible_and_nicknames_are_never_html(demo: Demo, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    evil = "<img src=x onerror=hacked=1>"  # fits the 32-character limit
    _join(page, demo.url(0), evil, "safe")
    _wait_text(page, "#online", evil)
    assert page.locator("#online img").count() == 0
    assert page.evaluate("window.hacked") is None

    page.fill("#text", "   ")
    page.click("#send")
    _wait_text(page, "#error", "Empty messages are not sent.")
    page.evaluate("window.chat.send('x'.repeat(501))")
    _wait_text(page, "#error", "at most 500 characters")
    page.evaluate("window.chat.send(new Uint8Array([1, 2, 3]))")
    _wait_text(page, "#error", "Only text messages are accepted.")
    # The server's refusals stay in the log, with their time.
    assert page.locator("#log li.error").count() == 2
    page.close()


def test_an_error_is_cleared_by_the_next_event_that_went_well(demo: Demo, browser: object) -> None:
    erin, frank = (browser.new_context().new_page() for _ in range(2))  # type: ignore[attr-defined]
    _join(erin, demo.url(0), "erin", "errors")
    _join(frank, demo.url(1), "frank", "errors")
    _wait_text(erin, "#online", "frank")

    erin.evaluate("window.chat.send(new Uint8Array([1]))")
    _wait_text(erin, "#error", "Only text messages are accepted.")
    frank.fill("#text", "all good")
    frank.click("#send")
    _wait_text(erin, "#log", "frankall good")
    assert erin.text_content("#error") == ""
    assert "Only text messages are accepted." in erin.text_content("#log li.error")

    # A refusal by the page itself, then a message that goes out.
    erin.fill("#text", "   ")
    erin.click("#send")
    _wait_text(erin, "#error", "Empty messages are not sent.")
    erin.fill("#text", "fine now")
    erin.click("#send")
    _wait_text(frank, "#log", "erinfine now")
    assert erin.text_content("#error") == ""
    erin.context.close()
    frank.context.close()


def test_a_paste_cut_by_the_length_limit_says_so(demo: Demo, browser: object) -> None:
    context = browser.new_context()  # type: ignore[attr-defined]
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=demo.url(0).rstrip("/"))
    page = context.new_page()
    _join(page, demo.url(0), "gina", "paste")
    assert page.is_hidden("#limit-note")

    # A real paste (Ctrl+V) of 617 characters once the line break is a space: the field keeps 500.
    page.evaluate("text => navigator.clipboard.writeText(text)", "first line\nsecond" + "x" * 600)
    page.focus("#text")
    page.keyboard.press("Control+V")
    page.wait_for_selector("#limit-note", state="visible")
    assert len(page.input_value("#text")) == 500
    assert page.text_content("#limit-note") == (
        "Your paste was cut: messages are at most 500 characters, and 117 did not fit."
    )

    # Below the limit the note goes; typed up to it, it says so.
    page.keyboard.press("Backspace")
    page.wait_for_selector("#limit-note", state="hidden")
    page.keyboard.type("yz")
    assert len(page.input_value("#text")) == 500
    assert page.text_content("#limit-note") == "500 of 500 characters: the limit."
    page.click("#send")
    page.wait_for_selector("#limit-note", state="hidden")
    _wait_text(page, "#log", "ginafirst line second")
    context.close()


def test_what_the_admin_sends_shows_as_system_lines(demo: Demo, browser: object) -> None:
    chat = browser.new_context().new_page()  # type: ignore[attr-defined]
    socket_id = _join(chat, demo.url(1), "hank", "ops")
    admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()  # type: ignore[attr-defined]
    _admin_log_in(admin, demo.url(0), demo.password())

    # Plain text and binary, from the admin of the other server process.
    _admin_send(admin, demo.url(0), socket_id, "text", "Maintenance at noon <b>today</b>")
    _wait_text(chat, "#log", "serverMaintenance at noon <b>today</b>")
    _admin_send(admin, demo.url(0), socket_id, "hex", "00 ff 41")
    _wait_text(chat, "#log", "serversent a binary message of 3 bytes.")
    # JSON that is no chat event is shown as it came too.
    _admin_send(admin, demo.url(0), socket_id, "text", '{"type": "maintenance"}')
    _wait_text(chat, "#log", 'server{"type": "maintenance"}')
    assert chat.locator("#log li.system").count() == 3
    assert chat.locator("#log b").count() == 0
    chat.context.close()
    admin.context.close()


def test_the_page_reconnects_with_backoff_and_says_so(demo: Demo, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    first = _join(page, demo.url(1), "dave", "lobby")
    # Every status the page shows (the shell may take longer to exit than the first backoff).
    page.evaluate(
        "() => { const status = document.getElementById('status'); window.statuses = [];"
        " new MutationObserver(() => window.statuses.push(status.textContent))"
        ".observe(status, { childList: true, characterData: true, subtree: true }); }"
    )
    demo.shell(f"from wsgroups import WebSocket; WebSocket({first}).disconnect('server restarted', 4000)")
    page.wait_for_function(
        "text => window.statuses.some(status => status.includes(text))",
        arg="connection lost (4000: server restarted); reconnecting in",
    )
    page.wait_for_function(f"document.getElementById('my-id').textContent !== '{first}'", timeout=15_000)
    # Full jitter: the first attempt after a drop waits a random time below 0.25 s.
    shown = page.evaluate("window.statuses.filter(status => status.includes('reconnecting in'))")
    delays = [float(re.search(r"reconnecting in ([0-9.]+) s", status).group(1)) for status in shown]  # type: ignore[union-attr]
    assert delays and 0 <= delays[0] <= 0.25, shown
    _wait_text(page, "#status", "connected to")
    page.close()


def test_the_banner_says_where_staff_scrape_the_metrics(demo: Demo) -> None:
    found = re.search(r"metrics\s+(http://127\.0\.0\.1:(\d+)/metrics)\s.*staff only", demo.output)
    assert found, demo.output
    url, base = found.group(1), demo.url(0).rstrip("/")
    assert int(found.group(2)) == demo.ports[0]
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    # Anonymous visitors are sent to the admin's login.
    with opener.open(url, timeout=30) as response:
        assert "/admin/login/" in response.url
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page
    form = {"csrfmiddlewaretoken": token.group(1), "username": "demo", "password": demo.password(), "next": "/metrics"}
    request = urllib.request.Request(f"{base}/admin/login/?next=/metrics", data=urllib.parse.urlencode(form).encode())
    with opener.open(request, timeout=30) as response:
        assert response.url == url
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = response.read().decode()
    for name in ("wsgroups_processes_live", "wsgroups_sockets_open", "wsgroups_messages_received_total"):
        assert f"# TYPE {name} " in body, body
    assert re.search(r'^wsgroups_processes_live\{kind="broadcaster"\} 1\.0$', body, re.MULTILINE), body


def test_ctrl_c_stops_every_demo_process_and_the_console_stayed_calm(demo: Demo) -> None:
    commands = demo.commands()
    assert commands, "the demo's processes were not found"
    # Handlers run inline: no runworker, which would have nothing to do.
    assert not [command for command in commands.values() if "runworker" in command], commands
    assert [command for command in commands.values() if command.endswith("wsbroadcast --no-progress")], commands
    time.sleep(max(0.0, 8 - (time.monotonic() - demo.started)))  # wsbroadcast ticks every second
    assert demo.stop() == 0, demo.output
    output = demo.output
    assert re.search(r"admin\s+http://127\.0\.0\.1:\d+/admin/\s+user: demo\s+password: \S+", output)
    assert "handlers    inline, in the two servers" in output
    assert "wsgroups demo stopped." in output

    # The banner comes after the processes' startup lines, and wsbroadcast, ticking every
    # second all along, logged one line: nothing changed. No progress line got in the way.
    banner = output.index(BANNER)
    assert output.count("Listening on TCP address") == 2
    assert output.rindex("Listening on TCP address") < banner
    ticks = [line for line in output.splitlines() if line.startswith("wsbroadcast:") and "sent" in line]
    assert len(ticks) == 1, ticks
    assert re.fullmatch(r"wsbroadcast: leading; sent 0, disconnected 0, pruned 0 in \d+ ms", ticks[0])
    assert output.index(ticks[0]) < banner
    assert "\r" not in output

    deadline = time.monotonic() + 10
    while demo.children():
        assert time.monotonic() < deadline, f"left behind: {demo.children()}"
        time.sleep(0.2)
    assert not any(_listening(port) for port in demo.ports)


def test_worker_mode_runs_handlers_in_a_runworker_the_admin_shows(browser: object, tmp_path: Path) -> None:
    demo = start_demo(tmp_path, "--worker")
    try:
        assert "handlers    in the runworker wsgroups process (worker mode)" in demo.output
        assert demo.output.index("Running worker for channels") < demo.output.index(BANNER)
        (worker,) = [pid for pid, command in demo.commands().items() if command.endswith("runworker wsgroups")]

        # The worker is in the admin's process list, live, before any handler has run.
        admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()  # type: ignore[attr-defined]
        _admin_log_in(admin, demo.url(0), demo.password())
        admin.goto(f"{demo.url(0)}admin/wsgroups/process/?kind=worker")
        row = admin.locator("#result_list tbody tr", has_text=f":{worker}")
        assert row.count() == 1
        assert row.locator("td.field-live img").get_attribute("alt") == "True"

        ivy, jo = (browser.new_context().new_page() for _ in range(2))  # type: ignore[attr-defined]
        _join(ivy, demo.url(0), "ivy", "lobby")
        _join(jo, demo.url(1), "jo", "lobby")
        _wait_text(ivy, "#online", "jo")
        ivy.fill("#text", "through the worker")
        ivy.click("#send")
        _wait_text(jo, "#log", "ivythrough the worker")

        # The message handler runs in the worker: while it is stopped, messages wait for it.
        os.kill(worker, signal.SIGSTOP)
        try:
            ivy.fill("#text", "held by the worker")
            ivy.click("#send")
            time.sleep(1.5)
            assert "held by the worker" not in jo.text_content("#log")
        finally:
            os.kill(worker, signal.SIGCONT)
        _wait_text(jo, "#log", "ivyheld by the worker")
        for page in (admin, ivy, jo):
            page.context.close()

        assert demo.stop() == 0, demo.output
        assert "wsgroups demo stopped." in demo.output
        deadline = time.monotonic() + 10
        while demo.children():
            assert time.monotonic() < deadline, f"left behind: {demo.children()}"
            time.sleep(0.2)
    finally:
        stop_demo(demo, tmp_path)
