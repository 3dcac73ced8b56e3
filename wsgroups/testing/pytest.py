"""The pytest fixture ``wsgroups_live_server``: a real daphne on a free loopback port.

List this module in ``pytest_plugins`` (``pytest_plugins = ["wsgroups.testing.pytest"]`` in
a ``conftest.py``). The fixture starts, for each test that asks for it, a daphne process serving
the project's ``ASGI_APPLICATION`` (through wsgroups' daphne adapter) against the test
database pytest-django set up, and gives each test that asks for it ``.url``
(``http://127.0.0.1:<port>``) and ``.ws_url`` (``ws://...``) for real clients and
browsers; the test gets pytest-django's ``transactional_db``, so the server sees the data
the test writes, and the server sees its writes. The server is a separate process (as
in production), so its database must be one other processes can open: SQLite's
in-memory test database cannot be (set ``DATABASES[...]["TEST"]["NAME"]`` to a file),
and its channel layer must link processes (Redis).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper

from ..servers.live import serve

__all__ = ["LiveServer", "wsgroups_live_server"]

#: Seconds the server process gets to listen, and to stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class LiveServer:
    """A running server: ``url`` for HTTP clients and browsers, ``ws_url`` for WebSocket clients."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def shared_test_databases(wrappers: Iterable[BaseDatabaseWrapper] | None = None) -> dict[str, str]:
    """The name of every test database (of ``wrappers``, by default every connection), by
    alias; raises ImproperlyConfigured for one another process cannot open."""
    names = {}
    for connection in wrappers if wrappers is not None else connections.all():
        alias = connection.alias
        if isinstance(connection, SQLiteDatabaseWrapper) and connection.is_in_memory_db():
            raise ImproperlyConfigured(
                f"wsgroups_live_server runs the server in another process, which cannot open the in-memory "
                f"SQLite test database of {alias!r}: set DATABASES[{alias!r}]['TEST']['NAME'] to a file path."
            )
        names[alias] = str(connection.settings_dict["NAME"])
    return names


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_live_server(host: str = "127.0.0.1") -> tuple[LiveServer, multiprocessing.process.BaseProcess]:
    """Start the server process on a free port of ``host`` and wait until it listens."""
    databases = shared_test_databases()
    connections.close_all()
    port = _free_port(host)
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE") or str(settings.SETTINGS_MODULE)
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(settings_module, databases, host, port), name="wsgroups-live-server", daemon=True
    )
    process.start()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not process.is_alive():
            raise RuntimeError(f"the live server exited with {process.exitcode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return LiveServer(host, port), process
        except OSError:
            if time.monotonic() > deadline:
                stop_live_server(process)
                raise RuntimeError(
                    f"the live server did not listen on {host}:{port} within {START_TIMEOUT:g}s"
                ) from None
            time.sleep(0.1)


def stop_live_server(process: multiprocessing.process.BaseProcess) -> None:
    """SIGTERM (daphne closes its sockets, wsgroups leaves the cluster), then SIGKILL if need be."""
    if process.is_alive():
        process.terminate()
        process.join(STOP_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join(STOP_TIMEOUT)


@pytest.fixture
def wsgroups_live_server(transactional_db: Any, django_db_blocker: Any) -> Iterator[LiveServer]:
    """A real daphne serving the project on a free loopback port, against the test database.

    One server per test: it joins the cluster in the test's database and stops before
    ``transactional_db`` empties it.
    """
    with django_db_blocker.unblock():
        server, process = start_live_server()
    try:
        yield server
    finally:
        stop_live_server(process)
