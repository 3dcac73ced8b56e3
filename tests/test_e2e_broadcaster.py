"""``manage.py wsbroadcast`` against real servers, on SQLite and PostgreSQL (the machine's, or a
private cluster the tests start)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import async_timeout
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .conftest import ROOT, Server, start_server
from .services import PostgresServer

pytestmark = pytest.mark.e2e


def _postgres_database(admin_dsn: str, name: str, create: bool) -> None:
    """Create (or drop) a PostgreSQL database."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_env(request: pytest.FixtureRequest, base_env: dict[str, str]) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield base_env
        return
    postgres: PostgresServer | None = None
    name = f"wsgroups_test_{os.getpid()}"
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        url = os.environ["DATABASE_URL"]
    else:
        postgres = request.getfixturevalue("postgres_server")
        _postgres_database(postgres.admin_dsn, name, create=True)
        url = postgres.url(name)
    env = {**base_env, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    yield env
    if postgres is not None:
        _postgres_database(postgres.admin_dsn, name, create=False)


@pytest.fixture
def bcast_server(database_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    server = start_server("daphne", database_env, tmp_path)
    yield server
    server.stop(signal.SIGKILL, timeout=5)


def _wsbroadcast(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "wsbroadcast", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _manage(env: dict[str, str], code: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _subscribe(env: dict[str, str], ids: list[int]) -> None:
    _manage(
        env,
        "from wsgroups.models import BroadcastSubscription as S; "
        f"S.objects.bulk_create([S(websocket_id=i) for i in {ids!r}])",
    )


def _counts(env: dict[str, str]) -> dict[int, int]:
    out = _manage(
        env,
        "import json; from wsgroups.models import BroadcastSubscription as S; "
        "print(json.dumps(dict(S.objects.values_list('websocket_id', 'num_broadcasted'))))",
    )
    return {int(k): v for k, v in json.loads(out.splitlines()[-1]).items()}


async def _open(server: Server) -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/room")
    return ws, int(json.loads(await ws.recv())["id"])


async def _drain(ws: ClientConnection, timeout: float) -> tuple[list[object], int | None]:
    frames: list[object] = []
    try:
        async with async_timeout.timeout(timeout):
            while True:
                frames.append(await ws.recv())
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd else None
    except (TimeoutError, asyncio.TimeoutError):
        return frames, None


def test_subscriber_gets_limit_messages_then_a_normal_close_and_its_row_goes(
    bcast_server: Server, database_env: dict[str, str]
) -> None:
    async def scenario() -> None:
        ws, socket_id = await _open(bcast_server)
        await asyncio.sleep(0.1)
        await asyncio.to_thread(_subscribe, database_env, [socket_id])
        proc = _wsbroadcast(database_env, "--interval", "0.3", "--limit", "4")
        first = await asyncio.wait_for(ws.recv(), 15)  # once the command is up (slow on a busy machine)
        started = time.monotonic()
        more, code = await _drain(ws, 15)
        frames = [first, *more]
        elapsed = time.monotonic() - started
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert frames == [f"Broadcasting id: {socket_id}"] * 4
        assert code == 1000
        assert 0.6 <= elapsed < 6, elapsed  # three more sends 0.3 s apart, then the close
        assert socket_id not in await asyncio.to_thread(_counts, database_env)
        assert "sent 1, disconnected 0, pruned 0" in out

    asyncio.run(scenario())


def test_dead_sockets_are_pruned_not_sent_to(bcast_server: Server, database_env: dict[str, str]) -> None:
    async def scenario() -> None:
        ws, socket_id = await _open(bcast_server)
        await ws.close()
        await asyncio.sleep(0.5)
        _manage(
            database_env,
            "from datetime import timedelta; from django.utils import timezone; "
            "from wsgroups.models import BroadcastSubscription as S; "
            f"S.objects.create(websocket_id={socket_id}); "
            f"S.objects.filter(websocket_id={socket_id}).update(created_at=timezone.now() - timedelta(seconds=60))",
        )
        proc = _wsbroadcast(database_env, "--once")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "sent 0, disconnected 0, pruned 1" in out
        assert socket_id not in _counts(database_env)

    asyncio.run(scenario())


def test_two_broadcasters_started_together_send_each_message_once(
    bcast_server: Server, database_env: dict[str, str]
) -> None:
    async def scenario() -> None:
        sockets = [await _open(bcast_server) for _ in range(3)]
        await asyncio.to_thread(_subscribe, database_env, [socket_id for _, socket_id in sockets])
        procs = [_wsbroadcast(database_env, "--interval", "0.3", "--limit", "5") for _ in range(2)]
        results = await asyncio.gather(*(_drain(ws, 20) for ws, _ in sockets))
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=20)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outputs
        for (frames, code), (_, socket_id) in zip(results, sockets, strict=True):
            assert frames == [f"Broadcasting id: {socket_id}"] * 5
            assert code == 1000
        assert any("standing by" in out for out in outputs), outputs

    asyncio.run(scenario())


def test_sigint_mid_run_leaves_counts_consistent(bcast_server: Server, database_env: dict[str, str]) -> None:
    async def scenario() -> None:
        ws, socket_id = await _open(bcast_server)
        await asyncio.to_thread(_subscribe, database_env, [socket_id])
        proc = _wsbroadcast(database_env, "--interval", "0.2", "--limit", "1000")
        frames: list[object] = []
        async with async_timeout.timeout(20):
            while len(frames) < 5:
                frames.append(await ws.recv())
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(proc.communicate, None, 20)
        assert proc.returncode == 0, out
        more, _ = await _drain(ws, 1.0)
        received = len(frames) + len(more)
        assert _counts(database_env)[socket_id] == received
        assert set(frames + more) == {f"Broadcasting id: {socket_id}"}
        await ws.close()

    asyncio.run(scenario())


class Lines:
    """The lines a process writes to a pipe, read as they come."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no line with {text!r}: {self.lines}"
            time.sleep(0.05)

    def join(self) -> list[str]:
        self._thread.join(20)
        return self.lines


def _no_subscriptions(env: dict[str, str]) -> None:
    """Delete the subscriptions earlier tests left, so that a first tick has nothing to prune."""
    _manage(env, "from wsgroups.models import BroadcastSubscription as S; S.objects.all().delete()")


def _tick_lines(lines: list[str]) -> list[str]:
    return [re.sub(r" in \d+ ms$", "", line) for line in lines if line.startswith("wsbroadcast:") and "sent" in line]


def test_the_log_has_a_tick_line_only_when_something_changed(
    bcast_server: Server, database_env: dict[str, str]
) -> None:
    async def scenario() -> None:
        ws, socket_id = await _open(bcast_server)
        await asyncio.to_thread(_no_subscriptions, database_env)
        proc = _wsbroadcast(database_env, "--interval", "0.2", "--limit", "3")
        lines = Lines(proc.stdout)
        await asyncio.to_thread(lines.wait_for, "wsbroadcast: leading")
        await asyncio.sleep(1.0)  # ticks with nothing to do
        await asyncio.to_thread(_subscribe, database_env, [socket_id])
        frames, code = await _drain(ws, 15)
        await asyncio.sleep(1.0)  # nothing to do again
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 20)
        assert proc.returncode == 0, lines.lines
        assert frames == [f"Broadcasting id: {socket_id}"] * 3
        assert code == 1000
        # About twenty ticks, four lines: each says what changed.
        assert _tick_lines(lines.join()) == [
            "wsbroadcast: leading; sent 0, disconnected 0, pruned 0",
            "wsbroadcast: sent 1, disconnected 0, pruned 0",
            "wsbroadcast: sent 0, disconnected 1, pruned 0",
            "wsbroadcast: sent 0, disconnected 0, pruned 0",
        ]

    asyncio.run(scenario())


def test_every_tick_is_logged_at_debug(database_env: dict[str, str]) -> None:
    _no_subscriptions(database_env)
    proc = _wsbroadcast({**database_env, "WSGROUPS_LOG_LEVEL": "DEBUG"}, "--interval", "0.2")
    lines = Lines(proc.stdout)
    lines.wait_for("wsbroadcast: leading")
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(20)
    ticks = _tick_lines(lines.join())
    assert ticks[0] == "wsbroadcast: leading; sent 0, disconnected 0, pruned 0"
    assert len(ticks) >= 5 and set(ticks[1:]) == {"wsbroadcast: sent 0, disconnected 0, pruned 0"}, ticks


@pytest.mark.parametrize("no_progress", [False, True])
def test_on_a_terminal_a_progress_line_is_rewritten_each_tick(database_env: dict[str, str], no_progress: bool) -> None:
    _no_subscriptions(database_env)
    terminal, console = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "wsbroadcast", "--interval", "0.2", *(["--no-progress"] if no_progress else [])],
        cwd=ROOT,
        env=database_env,
        stdout=console,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(console)
    screen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(terminal, 4096)
            except OSError:  # EIO: the process closed the terminal
                return
            if not data:
                return
            screen.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    lines = Lines(proc.stderr)
    try:
        lines.wait_for("wsbroadcast: leading")
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        reader.join(10)
        os.close(terminal)
    assert proc.returncode == 0, lines.lines
    shown = b"".join(screen).decode()
    # The log (stderr) has one tick line; the terminal, one rewrite per tick unless --no-progress.
    assert len(_tick_lines(lines.join())) == 1, lines.lines
    rewrites = shown.count("\r\x1b[Ksent 0, disconnected 0, pruned 0 in ")
    if no_progress:
        assert shown == "", shown
    else:
        assert rewrites >= 5, shown
        assert shown.endswith("\r\n")  # the last progress line stays, ended


def test_bad_arguments_are_command_errors(database_env: dict[str, str]) -> None:
    for args, text in (
        (["--message", "{nope}"], "only {id}"),
        (["--interval", "0"], "--interval"),
        (["--limit", "0"], "limit"),
    ):
        done = subprocess.run(
            [sys.executable, "manage.py", "wsbroadcast", "--once", *args],
            cwd=ROOT,
            env=database_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "CommandError" in done.stderr or text in done.stderr, done.stderr
        assert text in done.stderr
