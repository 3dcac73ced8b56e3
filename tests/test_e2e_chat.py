"""The chat demo in a real headless Chromium, against ``manage.py demo`` (two servers,
runworker, wsbroadcast, the embedded Redis)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT
from .services import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "test-output"


class Demo:
    def __init__(self, process: subprocess.Popen[str], ports: tuple[int, int], env: dict[str, str], marker: str):
        self.process, self.ports, self.env, self.marker = process, ports, env, marker
        self.output = ""

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

    def shell(self, code: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("demo")
    marker = f"wsgroups-demo-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "WSGROUPS_TEST_EVENTS")
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SQLITE_PATH": str(workdir / "demo.sqlite3"),
        "WSGROUPS_REDIS_DIR": str(workdir / "redis"),
        "WSGROUPS_DEMO_MARKER": marker,
        "PYTHONUNBUFFERED": "1",
    }
    ports = (free_port(), free_port())
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", str(ports[0]), "--second-port", str(ports[1])],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Demo(process, ports, env, marker)
    deadline = time.monotonic() + 60
    while not all(_listening(port) for port in ports):
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "the demo did not start listening"
        time.sleep(0.2)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                running.output, _ = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in running.children():
            os.kill(pid, signal.SIGKILL)
        pidfile = workdir / "redis" / "redis.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
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


def test_two_tabs_on_two_servers_chat_across_processes(demo: Demo, browser: object) -> None:
    # Separate contexts: cookies are per host, whatever the port.
    alice_page, bob_page, carol_page = (browser.new_context().new_page() for _ in range(3))  # type: ignore[attr-defined]
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
    assert alice_page.locator("#log li.mine").all_text_contents() == ["alicehello from 8000"]

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
    page.close()


def test_the_page_reconnects_with_backoff_and_says_so(demo: Demo, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    first = _join(page, demo.url(1), "dave", "lobby")
    demo.shell(f"from wsgroups import WebSocket; WebSocket({first}).disconnect('server restarted', 4000)")
    _wait_text(page, "#status", "connection lost (4000: server restarted); reconnecting in")
    page.wait_for_function(f"document.getElementById('my-id').textContent !== '{first}'", timeout=15_000)
    _wait_text(page, "#status", "connected to")
    page.close()


def test_ctrl_c_stops_every_demo_process(demo: Demo) -> None:
    assert demo.children(), "the demo's processes were not found"
    demo.process.send_signal(signal.SIGINT)
    demo.output, _ = demo.process.communicate(timeout=30)
    assert demo.process.returncode == 0, demo.output
    assert re.search(r"admin\s+http://127\.0\.0\.1:\d+/admin/\s+user: demo\s+password: \S+", demo.output)
    assert "wsgroups demo stopped." in demo.output
    deadline = time.monotonic() + 10
    while demo.children():
        assert time.monotonic() < deadline, f"left behind: {demo.children()}"
        time.sleep(0.2)
    assert not any(_listening(port) for port in demo.ports)
