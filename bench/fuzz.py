"""``python -m bench.fuzz``: send the cases of :mod:`bench.fuzzing` to a real server and check it.

    python -m bench.fuzz --server daphne --duration 600 --seed 1
    python -m bench.fuzz --server uvicorn --seed 1 --case 137     # replay one case

Starts a server with the tests' settings (``tests.settings``: the ``echo`` group, a 64 KiB
message limit) on a free loopback port, the Redis at ``--redis-url`` or a private one, and
a throw-away SQLite database; runs cases until ``--duration`` seconds or ``--cases`` cases;
stops every process it started. Exits 1 when an invariant failed, printing the seed and
the failing cases (replay one with ``--case``).

Invariants, per case and after the run:

- every answer to a handshake is a 101, a 4xx, a status the path's view answers with, or a
  TCP close; never nothing within the timeout;
- every close frame the server sends has a code allowed on the wire and a UTF-8 reason;
- every valid message is echoed back exactly, every ping answered by its pong, a client
  close answered by a close and a TCP close; an invalid frame ends the connection (with
  1007 for bad UTF-8, 1009 for an oversized message, when a close frame is sent);
- the ``echo`` disconnect handler runs exactly once per opened socket;
- no registry row of the run's sockets is left open;
- the server process is alive and still echoes a normal message.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fuzzing import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Ending,
    FrameCase,
    HandshakeCase,
    Message,
    Step,
    frame,
    make_case,
)
from bench.report import read_jsonl
from bench.servers import LOOPBACK, ROOT, SERVER_KINDS, ProcessGroup
from wsgroups.codes import is_sendable_close_code

__all__ = ["CaseResult", "Run", "check_registry", "main", "run_case", "run_cases"]

CASE_TIMEOUT = 10.0
#: Seconds between frames a case sends: far below any per-socket message rate limit.
PACE = 0.01


class Closed(Exception):
    """The server closed TCP (EOF or reset)."""


@dataclass
class CaseResult:
    description: str
    violations: list[str] = field(default_factory=list)
    #: IDs of sockets opened in group ``echo`` / in any group.
    echo_ids: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    outcome: str = ""


@dataclass
class Run:
    seed: int
    server: str
    results: list[CaseResult] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def echo_ids(self) -> list[int]:
        return [i for result in self.results for i in result.echo_ids]

    @property
    def ids(self) -> list[int]:
        return [i for result in self.results for i in result.ids]

    def failures(self) -> list[str]:
        lines = [f"{r.description}: {v}" for r in self.results for v in r.violations]
        return lines + self.violations

    def summary(self) -> str:
        outcomes: dict[str, int] = {}
        for result in self.results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        common = ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items(), key=lambda kv: -kv[1])[:12])
        return (
            f"seed {self.seed} on {self.server}: {len(self.results)} cases, {len(self.echo_ids)} echo sockets, "
            f"{len(self.failures())} violations; outcomes: {common}"
        )


class Wire:
    """A client TCP connection that reads server frames and response heads, with a deadline."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.buffer = b""
        self.deadline = time.monotonic() + timeout

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise Closed(str(exc)) from None

    def _fill(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer within the case timeout")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no answer within the case timeout") from None
        except ConnectionResetError:
            raise Closed("reset") from None
        if not chunk:
            raise Closed("eof")
        self.buffer += chunk

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def head(self) -> bytes:
        """The response head, up to and without the blank line."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def read_frame(self) -> tuple[bool, int, int, bytes]:
        """``(fin, rsv, opcode, payload)`` of the next server frame (which must be unmasked)."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        if second & 0x80:
            raise ValueError("the server sent a masked frame")
        return bool(first & 0x80), (first >> 4) & 0x7, first & 0xF, self._take(length)

    def read_message(self, on_pong: Callable[[bytes], None]) -> tuple[int, bytes]:
        """The next data message (reassembled) or ``(CLOSE, payload)``; pings answered, pongs passed on."""
        opcode, parts = None, []
        while True:
            fin, rsv, op, payload = self.read_frame()
            if rsv:
                raise ValueError(f"the server set RSV bits {rsv} without an extension")
            if op == PING:
                self.send(frame(PONG, payload, mask=os.urandom(4)))
                continue
            if op == PONG:
                on_pong(payload)
                continue
            if op == CLOSE:
                return CLOSE, payload
            if op in (TEXT, BINARY) and opcode is None:
                opcode = op
            elif op != CONT or opcode is None:
                raise ValueError(f"the server sent opcode {op:#x} out of place")
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)


def close_problem(payload: bytes) -> str | None:
    """Why a close frame's payload is not allowed on the wire, or None."""
    if not payload:
        return None
    if len(payload) == 1:
        return "close payload of 1 byte"
    (code,) = struct.unpack("!H", payload[:2])
    if not is_sendable_close_code(code):
        return f"close code {code} is not allowed on the wire"
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return f"close reason is not UTF-8: {payload[2:]!r}"
    return None


def _code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def _upgrade_request(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _wait_eof(wire: Wire) -> bool:
    """Whether the server closes TCP before the deadline (frames still arriving are dropped)."""
    try:
        while True:
            wire._fill()
            wire.buffer = b""
    except Closed:
        return True
    except (TimeoutError, OSError):
        return False


def run_frame_case(port: int, case: FrameCase, timeout: float = CASE_TIMEOUT) -> CaseResult:
    result = CaseResult(case.description)
    bad = result.violations.append
    wire = Wire(port, timeout)
    try:
        wire.send(_upgrade_request(port, "/ws/echo"))
        status = wire.head().split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 101"):
            bad(f"a normal upgrade was answered {status!r}")
            result.outcome = "no upgrade"
            return result
        pongs: list[bytes] = []
        opcode, hello = wire.read_message(pongs.append)
        socket_id = int(json.loads(hello)["id"])
        result.echo_ids.append(socket_id)
        result.ids.append(socket_id)
        pings: list[bytes] = []
        for step in case.steps:
            time.sleep(PACE)
            wire.send(step.data)
            pings.extend(step.pings)
            if step.message is None:
                continue
            opcode, payload = wire.read_message(pongs.append)
            if opcode == CLOSE:
                bad(f"closed ({_code(payload)}) instead of echoing a valid message")
                problem = close_problem(payload)
                if problem:
                    bad(problem)
                result.outcome = f"closed early {_code(payload)}"
                return result
            if (opcode, payload) != (step.message.opcode, step.message.payload):
                bad(
                    f"echo differs: sent opcode {step.message.opcode} of {len(step.message.payload)} bytes, "
                    f"got opcode {opcode} of {len(payload)} bytes"
                )
        ending = case.ending
        time.sleep(PACE)
        if ending.kind == "truncated":
            wire.send(ending.data)
            wire.sock.shutdown(socket.SHUT_RDWR)
            result.outcome = "truncated"
            return result
        try:
            wire.send(ending.data)
        except Closed:
            # The server may close while a large invalid message is still being written.
            result.outcome = f"{ending.kind}: reset while sending"
            return result
        try:
            while True:
                opcode, payload = wire.read_message(pongs.append)
                if opcode == CLOSE:
                    break
                bad(f"a data frame after {ending.name}: opcode {opcode}, {len(payload)} bytes")
        except Closed:
            if ending.kind == "close" or ending.expect_code is not None:
                bad(f"TCP closed without a close frame after {ending.name}")
            result.outcome = f"{ending.kind}: tcp close"
            return result
        problem = close_problem(payload)
        if problem:
            bad(problem)
        code = _code(payload)
        result.outcome = f"{ending.kind}: {code}"
        if ending.expect_code is not None and code != ending.expect_code:
            bad(f"closed with {code} after {ending.name}, expected {ending.expect_code}")
        if ending.kind == "close" and pongs != pings:
            bad(f"{len(pings)} pings were answered by {len(pongs)} pongs (or other payloads)")
        if ending.kind == "invalid":
            with contextlib.suppress(Closed, OSError):  # the server may have dropped TCP already
                wire.send(frame(CLOSE, payload[:2], mask=os.urandom(4)))
        if not _wait_eof(wire):
            bad(f"the server kept TCP open {timeout:.0f} s after the close ({ending.name})")
    except TimeoutError as exc:
        bad(f"hang: {exc}")
        result.outcome = "hang"
    except Closed as exc:
        bad(f"TCP closed ({exc}) in the middle of a valid exchange")
        result.outcome = "dropped"
    except (ValueError, KeyError) as exc:
        bad(f"unreadable server frames: {exc}")
        result.outcome = "garbled"
    finally:
        wire.close()
    return result


def run_handshake_case(port: int, case: HandshakeCase, timeout: float = CASE_TIMEOUT) -> CaseResult:
    result = CaseResult(case.description)
    bad = result.violations.append
    wire = Wire(port, timeout)
    try:
        try:
            wire.send(case.request)
            head = wire.head()
        except Closed:
            result.outcome = "tcp close"
            return result
        status_line = head.split(b"\r\n", 1)[0]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            bad(f"not an HTTP response: {status_line!r}")
            result.outcome = "garbled"
            return result
        status = int(parts[1])
        result.outcome = str(status)
        if status != 101:
            if not (400 <= status < 500 or status in case.view_statuses):
                bad(f"answered {status_line!r}")
            return result
        extensions = b"sec-websocket-extensions:" in head.lower()
        wire.send(frame(CLOSE, struct.pack("!H", 1000), mask=os.urandom(4)))
        try:
            while True:
                opcode, payload = wire.read_message(lambda pong: None)
                if opcode == CLOSE:
                    problem = close_problem(payload)
                    if problem:
                        bad(problem)
                    result.outcome = f"101, close {_code(payload)}"
                    break
                if opcode == TEXT and not extensions:
                    _note_hello(result, payload)
        except Closed:
            result.outcome = "101, tcp close"
            return result
        if not _wait_eof(wire):
            bad(f"the server kept TCP open {timeout:.0f} s after the close")
    except TimeoutError as exc:
        bad(f"hang: {exc}")
        result.outcome = "hang"
    except ValueError as exc:
        if "extension" not in str(exc):
            bad(f"unreadable server frames: {exc}")
    finally:
        wire.close()
    return result


def _note_hello(result: CaseResult, payload: bytes) -> None:
    try:
        hello = json.loads(payload)
    except ValueError:
        return
    if isinstance(hello, dict) and isinstance(hello.get("id"), int):
        result.ids.append(hello["id"])
        if hello.get("group") == "echo":
            result.echo_ids.append(hello["id"])


def run_case(port: int, seed: int, index: int, timeout: float = CASE_TIMEOUT) -> CaseResult:
    case = make_case(seed, index, port)
    if isinstance(case, FrameCase):
        return run_frame_case(port, case, timeout)
    return run_handshake_case(port, case, timeout)


def run_cases(
    port: int,
    seed: int,
    *,
    max_cases: int,
    duration: float,
    server: str = "",
    timeout: float = CASE_TIMEOUT,
    only: Iterable[int] | None = None,
) -> Run:
    """Cases ``0, 1, ...`` (or ``only``) until ``max_cases`` ran or ``duration`` seconds passed."""
    run = Run(seed, server)
    deadline = time.monotonic() + duration
    indexes = list(only) if only is not None else range(max_cases)
    for index in indexes:
        if time.monotonic() > deadline:
            break
        run.results.append(run_case(port, seed, index, timeout))
    return run


def normal_echo(port: int, timeout: float = CASE_TIMEOUT) -> list[str]:
    """Violations of a plain exchange: a text and a binary message echoed, a clean close."""
    text, data = b"~still echoing", bytes(range(256))
    steps = (
        Step(frame(TEXT, text, mask=os.urandom(4)), Message(TEXT, text)),
        Step(frame(BINARY, data, mask=os.urandom(4)), Message(BINARY, data)),
    )
    ending = Ending("close", "close", frame(CLOSE, struct.pack("!H", 1000), mask=os.urandom(4)), 1000)
    result = run_frame_case(port, FrameCase(-1, steps, ending), timeout)
    return result.violations


def disconnect_counts(events: list[dict[str, Any]], ids: Iterable[int]) -> dict[int, int]:
    wanted = set(ids)
    counts = dict.fromkeys(wanted, 0)
    for row in events:
        if row.get("event") == "disconnect" and row.get("id") in wanted:
            counts[row["id"]] += 1
    return counts


def check_disconnects(
    read_events: Callable[[], list[dict[str, Any]]], ids: list[int], timeout: float = 20
) -> list[str]:
    """Wait until every ``echo`` socket's disconnect handler ran; then each must have run once."""
    deadline = time.monotonic() + timeout
    while True:
        counts = disconnect_counts(read_events(), ids)
        if all(counts.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.5)  # a second, wrong call would land here
    counts = disconnect_counts(read_events(), ids)
    return [f"disconnect handler of socket {i} ran {n} times" for i, n in sorted(counts.items()) if n != 1]


REGISTRY_QUERY = """
import json, sys
from wsgroups.models import Connection
ids = [int(i) for i in sys.argv[-1].split(",") if i]
rows = dict(Connection.objects.filter(pk__in=ids).values_list("pk", "state"))
print(json.dumps({"open": sorted(i for i in ids if rows.get(i) == "open"), "missing": sorted(set(ids) - set(rows))}))
"""


def registry_rows(env: dict[str, str], ids: list[int]) -> dict[str, list[int]]:
    """IDs among ``ids`` whose registry row is open, and those with no row, from a separate process."""
    script = Path(tempfile.gettempdir()) / f"wsgroups-fuzz-registry-{os.getpid()}.py"
    script.write_text(REGISTRY_QUERY)
    try:
        code = f"import sys; sys.argv.append({','.join(map(str, ids))!r}); exec(open({str(script)!r}).read())"
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
            check=True,
        )
    finally:
        script.unlink(missing_ok=True)
    result: dict[str, list[int]] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def check_registry(env: dict[str, str], ids: list[int], timeout: float = 20) -> list[str]:
    """Every socket of the run has a registry row, and none is left open (rows are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = registry_rows(env, ids)
        if not (rows["open"] or rows["missing"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    problems = [f"registry row of socket {i} is still open" for i in rows["open"]]
    return problems + [f"socket {i} has no registry row" for i in rows["missing"]]


def check_run(
    run: Run,
    port: int,
    alive: Callable[[], bool],
    read_events: Callable[[], list[dict[str, Any]]],
    env: dict[str, str],
) -> None:
    """The after-run invariants, added to ``run.violations``."""
    if not alive():
        run.violations.append("the server process died")
        return
    run.violations += [f"after the run: {v}" for v in normal_echo(port)]
    run.violations += check_disconnects(read_events, run.echo_ids)
    run.violations += check_registry(env, run.ids)
    if not alive():
        run.violations.append("the server process died")


def report(run: Run) -> str:
    lines = [run.summary()]
    failures = run.failures()
    if failures:
        lines.append(f"FAILED with seed {run.seed} on {run.server}; replay a case with:")
        lines.append(f"  python -m bench.fuzz --server {run.server} --seed {run.seed} --case INDEX")
        lines += [f"  {failure}" for failure in failures[:50]]
        if len(failures) > 50:
            lines.append(f"  ... and {len(failures) - 50} more")
    return "\n".join(lines)


def _events(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=SERVER_KINDS, default="daphne")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of cases (default 300)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--cases", type=int, default=1_000_000, help="at most this many cases")
    parser.add_argument("--case", type=int, action="append", help="run only this case index (repeatable)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args(argv)
    print(f"fuzzing {args.server} with seed {args.seed}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="wsgroups-fuzz-") as tmp:
        workdir = Path(tmp)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "SQLITE_PATH": str(workdir / "fuzz.sqlite3"),
            "WSGROUPS_TEST_EVENTS": str(workdir / "events.jsonl"),
        }
        env.pop("DATABASE_URL", None)
        with ProcessGroup(workdir, env, grace=10) as processes:
            env["REDIS_URL"] = processes.redis_url(args.redis_url)
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=300,
            )
            server = processes.start_server(
                args.server, args.server, application="project.asgi:application", uvicorn_options=["--no-access-log"]
            )
            port = server.port
            run = run_cases(
                port, args.seed, max_cases=args.cases, duration=args.duration, server=args.server, only=args.case
            )
            check_run(
                run,
                port,
                lambda: server.popen.poll() is None,
                lambda: _events(workdir / "events.jsonl"),
                env,
            )
            print(report(run))
            if run.failures():
                print(f"server log tail:\n{server.log_tail(40)}", file=sys.stderr)
    return 1 if run.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
