"""Fixtures that start real services: Redis, a migrated database, and server processes.

Servers run as separate processes (daphne, uvicorn, ``manage.py runserver``) on free
loopback ports with ``tests.settings``; every test that talks to them goes over TCP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .services import PostgresServer, RedisServer, free_port, postgres_service, redis_service

pytest_plugins = ["wsgroups.testing.pytest"]

ROOT = Path(__file__).resolve().parent.parent
SERVER_KINDS = ("daphne", "uvicorn")
DEFAULT_APPLICATION = "project.asgi:application"
#: The test project with Channels consumers beside the views (``channels=``).
CHANNELS_APPLICATION = "tests.asgi:application"
#: Servers that run several worker processes behind one port (tests/test_e2e_servers.py).
MULTI_WORKER_KINDS = ("uvicorn-workers", "gunicorn")
#: Worker processes of a multi-worker server.
WORKERS = 2
#: Debian's Chromium, which the browser tests drive through Playwright.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Any) -> Any:
    """Debian's headless Chromium, launched by a ``sync_playwright()`` instance."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The Redis of this test run (chosen when the settings were read)."""
    redis = redis_service()
    yield redis
    if redis.process is not None:
        redis.process.terminate()
        redis.process.wait(10)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The machine's PostgreSQL, or a private cluster when none answers at 127.0.0.1:5432."""
    postgres = postgres_service()
    yield postgres
    postgres.stop()


@pytest.fixture(scope="session")
def base_env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of every server process: test settings, a migrated SQLite file, the Redis."""
    workdir = tmp_path_factory.mktemp("servers")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "REDIS_URL": redis_server.url,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    if not env.get("DATABASE_URL"):
        env["SQLITE_PATH"] = str(workdir / "db.sqlite3")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    return env


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    events_path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        rows = [json.loads(line) for line in self.events_path.read_text().splitlines() if line]
        return [row for row in rows if kind is None or row["event"] == kind]

    def wait_for_events(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.events()
            if predicate(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return int(self.process.returncode)


def server_command(
    kind: str, port: int, extra_args: list[str], host: str = "127.0.0.1", application: str = DEFAULT_APPLICATION
) -> list[str]:
    bindir = Path(sys.executable).parent
    if kind == "daphne":
        return [str(bindir / "daphne"), "-b", host, "-p", str(port), *extra_args, application]
    if kind == "uvicorn":
        return [
            str(bindir / "uvicorn"),
            "--host",
            host,
            "--port",
            str(port),
            "--no-access-log",
            *extra_args,
            application,
        ]
    if kind == "hypercorn":
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return [str(bindir / "hypercorn"), "--bind", bind, *extra_args, application]
    if kind == "uvicorn-workers":
        # uvicorn's own supervisor with WORKERS worker processes on one listening socket.
        return [*server_command("uvicorn", port, ["--workers", str(WORKERS), *extra_args], host, application)]
    if kind == "gunicorn":
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return [
            str(bindir / "gunicorn"),
            "--worker-class",
            "uvicorn.workers.UvicornWorker",
            "--workers",
            str(WORKERS),
            "--bind",
            bind,
            *extra_args,
            application,
        ]
    if kind == "granian":
        return [
            str(bindir / "granian"),
            "--interface",
            "asgi",
            "--host",
            host,
            "--port",
            str(port),
            *extra_args,
            application,
        ]
    if kind == "runserver":
        return [sys.executable, "manage.py", "runserver", "--noreload", f"{host}:{port}", *extra_args]
    if kind == "runserver-autoreload":
        return [sys.executable, "manage.py", "runserver", f"{host}:{port}", *extra_args]
    if kind == "runworker":
        return [sys.executable, "manage.py", "runworker", "wsgroups", *extra_args]
    raise ValueError(f"unknown server kind {kind!r}")


def start_server(
    kind: str,
    env: dict[str, str],
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    host: str = "127.0.0.1",
    application: str = DEFAULT_APPLICATION,
) -> Server:
    """Start a server process listening on ``host`` (a loopback address) and a free port.

    ``application`` is the ASGI application (``module:name``) daphne and uvicorn serve;
    runserver serves it too (as ``ASGI_APPLICATION``, through ``WSGROUPS_TEST_ASGI_APPLICATION``).

    A server on another address than 127.0.0.1 also accepts that address as its ``Host``
    (``WSGROUPS_TEST_EXTRA_HOSTS``, added to ``ALLOWED_HOSTS``), as a deployment would.
    """
    port = free_port(host)
    name = f"{kind}-{port}" if host == "127.0.0.1" else f"{kind}-{host}-{port}"
    log_path = workdir / f"{name}.log"
    events_path = workdir / f"{name}.events"
    full_env = {**env, **(extra_env or {}), "WSGROUPS_TEST_EVENTS": str(events_path)}
    if host != "127.0.0.1":
        full_env["WSGROUPS_TEST_EXTRA_HOSTS"] = host
    if application != DEFAULT_APPLICATION:
        full_env["WSGROUPS_TEST_ASGI_APPLICATION"] = application.replace(":", ".")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            server_command(kind, port, extra_args or [], host, application),
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(kind, port, proc, log_path, events_path, host=host)
    deadline = time.monotonic() + 30
    while kind == "runworker":
        if proc.poll() is not None:
            raise RuntimeError(f"runworker exited with {proc.returncode}:\n{server.log()}")
        if "Running worker" in server.log():
            return server
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"runworker did not start:\n{server.log()}")
        time.sleep(0.1)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode}:\n{server.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.stop(signal.SIGKILL)
                raise RuntimeError(f"{kind} did not listen on {host}:{port}:\n{server.log()}") from None
            time.sleep(0.1)
    return server


@pytest.fixture
def server_factory(base_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers for one test; all are stopped (SIGKILL if need be) afterwards."""
    started: list[Server] = []

    def factory(kind: str, **kwargs: Any) -> Server:
        server = start_server(kind, base_env, tmp_path, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(signal.SIGKILL, timeout=5)


def run_ctl(env: dict[str, str], *args: str, timeout: float = 60) -> Any:
    """Run ``manage.py wsctl`` (tests/wsapp) in its own process and return its JSON result."""
    done = subprocess.run(
        [sys.executable, "manage.py", "wsctl", *args], cwd=ROOT, env=env, capture_output=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"wsctl {args} failed:\n{done.stdout.decode()}\n{done.stderr.decode()}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])["result"]


def private_database(env: dict[str, str], path: Path) -> dict[str, str]:
    """``env`` with a migrated SQLite database of its own at ``path`` (unchanged on PostgreSQL),
    so that no other test's server takes part in the cluster of the servers started with it."""
    env = dict(env)
    if "SQLITE_PATH" in env:
        env["SQLITE_PATH"] = str(path)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
    return env


@dataclass
class Cluster:
    """Two server processes (daphne and uvicorn) sharing a Redis and a database."""

    env: dict[str, str]
    servers: list[Server]

    def ctl(self, *args: str, timeout: float = 60) -> Any:
        return run_ctl(self.env, *args, timeout=timeout)


@pytest.fixture(params=["redis", "embedded"])
def cluster(request: pytest.FixtureRequest, base_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    """Two servers linked by the tests' Redis, or by the demo's embedded Redis.

    The pair has a database of its own, so that no other test's server takes part in its
    cluster (reaping its dead, for instance).
    """
    env = private_database(base_env, tmp_path / "cluster.sqlite3")
    if request.param == "embedded":
        env.pop("REDIS_URL")
        env["WSGROUPS_TEST_EMBEDDED_REDIS"] = "1"
        env["WSGROUPS_REDIS_DIR"] = str(tmp_path / "redis")
    servers = [start_server(kind, env, tmp_path) for kind in ("daphne", "uvicorn")]
    try:
        yield Cluster(env, servers)
    finally:
        for server in servers:
            server.stop(signal.SIGKILL, timeout=5)
        pidfile = tmp_path / "redis" / "redis.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(
    request: pytest.FixtureRequest, base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One long-lived server of each kind, shared by the tests that do not stop it."""
    server = start_server(request.param, base_env, tmp_path_factory.mktemp(request.param))
    yield server
    server.stop(signal.SIGKILL, timeout=5)


@pytest.fixture
def runtime() -> Iterator[Any]:
    """A wsgroups Runtime on an event loop of its own, not started; closed afterwards."""
    import asyncio

    from wsgroups.runtime import Runtime  # once Django is set up

    loop = asyncio.new_event_loop()
    runtime = Runtime(loop)
    yield runtime
    runtime.executor.shutdown(wait=True)
    runtime.upgrade_executor.shutdown(wait=True)
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


@pytest.fixture
def wslog(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """caplog that sees the "wsgroups" logger (the project's settings stop it from propagating)."""
    import logging

    monkeypatch.setattr(logging.getLogger("wsgroups"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="wsgroups")
    return caplog
