"""Autobahn protocol conformance of wsgroups under daphne, uvicorn and hypercorn.

Runs the cases of the Autobahn test suite (with kosoku, which drives the suite's own
case files from Python 3) against an echo endpoint — ``/conformance`` of the test
project (``tests.settings``), whose handlers send every message back as it came — under
each server, with ``PERMESSAGE_DEFLATE`` off and on::

    python -m bench.conformance                      # the full run, report in bench/CONFORMANCE.md
    python -m bench.conformance --server uvicorn --deflate on --case '12.1.*'

The protocol cases (1.x to 7.x and 10.x: framing, pings and pongs, reserved bits,
opcodes, fragmentation, UTF-8, close handling) run in both modes; the compression cases
(12.x, 13.x) with the setting on. The 9.x cases (throughput of messages up to 16 MiB) are
not run: they measure speed, past the message size limits a deployment sets. A case that
fails under wsgroups is run again against :mod:`bench.stock_echo` under the same server
program, to tell the server's own failures (:data:`KNOWN_FAILURES`, each with its reason)
from wsgroups' own. The command exits 1 when any case fails that is not a known failure
of its server. ``tests/test_e2e_conformance.py`` runs the protocol cases and a subset of
the compression cases (:data:`CI_COMPRESSION_CASES`) on every test run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kosoku import FailureError, run_fuzzingclient

from bench.servers import LOOPBACK, ROOT, ProcessGroup

__all__ = [
    "CI_COMPRESSION_CASES",
    "COMPRESSION_CASES",
    "ENDPOINT",
    "KNOWN_FAILURES",
    "MAX_MESSAGE_SIZE",
    "PROTOCOL_CASES",
    "SERVERS",
    "STOCK_APPLICATION",
    "Outcome",
    "failures",
    "run_cases",
    "server_env",
]

SERVERS = ("daphne", "uvicorn", "hypercorn")
#: The path of the echo endpoint in the test project (``tests/wsapp``).
ENDPOINT = "/conformance"
WSGROUPS_APPLICATION = "project.asgi:application"
STOCK_APPLICATION = "bench.stock_echo:application"
#: The 247 protocol cases.
PROTOCOL_CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*")
#: The 216 permessage-deflate cases: 1,000 messages of 16 bytes to 128 KiB each, whole or
#: fragmented, with the default offer (12.x) and with each kind of offer (13.x).
COMPRESSION_CASES = ("12.*", "13.*")
#: A bounded subset for every test run: from each of the 12 subcategories (12.1-12.5:
#: text, binary, fragmentation; 13.1-13.7: context takeover and window sizes offered), its
#: 16-byte and 1 KiB cases, and one 64 KiB message fragmented into 4 KiB frames.
CI_COMPRESSION_CASES = (
    *(f"12.{minor}.{case}" for minor in range(1, 6) for case in (1, 4)),
    *(f"13.{minor}.{case}" for minor in range(1, 8) for case in (1, 4)),
    "12.1.13",
)
#: Messages up to this size (12.x and 13.x echo messages of 128 KiB).
MAX_MESSAGE_SIZE = 256 * 1024
#: Cases each server program fails on its own (under :mod:`bench.stock_echo` too), with why.
KNOWN_FAILURES: dict[str, dict[str, str]] = {
    "daphne": {},
    "uvicorn": {
        "7.1.5": (
            "a close frame that arrives while a fragmented message is incomplete is answered with "
            "1002, not 1000: websockets' sans-I/O protocol, which uvicorn runs, raises "
            "ProtocolError('incomplete fragmented message') there (RFC 6455 allows control "
            "frames between fragments, and the close ends the message)"
        ),
    },
    "hypercorn": {},
}


@dataclass(frozen=True)
class Outcome:
    """One case's verdict as kosoku reported it."""

    case_id: str
    passed: bool
    behavior: str
    behavior_close: str
    remote_close_code: int | None
    detail: str

    @classmethod
    def of(cls, result: Any) -> Outcome:
        return cls(
            result.case_id,
            bool(result.passed),
            result.behavior.value,
            result.behavior_close.value,
            result.remote_close_code,
            f"{result.result} {result.result_close}".strip(),
        )


async def _run(url: str, cases: Sequence[str], concurrency: int) -> list[Any]:
    try:
        return list(await run_fuzzingclient(url, list(cases), concurrency=concurrency))
    except FailureError as failure:  # raised when any case fails; it carries every result
        return list(failure.results)


def run_cases(url: str, cases: Sequence[str], concurrency: int = 1, timeout: float = 3600.0) -> list[Outcome]:
    """Run the Autobahn ``cases`` (ids or globs) against the WebSocket endpoint ``url``.

    kosoku runs in a process of its own (``--url``): it imports the case files with a
    Python 3 stand-in for the ``autobahn`` package they were written for, which must not
    meet the real autobahn (daphne's) in one interpreter.
    """
    argv = [sys.executable, "-m", "bench.conformance", "--url", url, "--concurrency", str(concurrency)]
    argv += [f"--case={case}" for case in cases]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    outcomes = [Outcome(**json.loads(line)) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not outcomes:
        raise RuntimeError(
            f"kosoku did not run {list(cases)} through (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return outcomes


def _print_outcomes(url: str, cases: Sequence[str], concurrency: int) -> None:
    """Run the cases here and print each outcome as a JSON line (the ``--url`` mode)."""
    for result in asyncio.run(_run(url, cases, concurrency)):
        print(json.dumps(dataclasses.asdict(Outcome.of(result))), flush=True)
    # kosoku's native runtime has been seen to abort (SIGABRT) while the interpreter shuts
    # down, after every result was out: leave without that shutdown.
    os._exit(0)


def failures(outcomes: Iterable[Outcome]) -> dict[str, Outcome]:
    """The failed cases by id."""
    return {outcome.case_id: outcome for outcome in outcomes if not outcome.passed}


def server_env(base: dict[str, str], deflate: bool) -> dict[str, str]:
    """The environment of a wsgroups server under test: ``tests.settings`` with
    ``PERMESSAGE_DEFLATE`` as asked and messages up to :data:`MAX_MESSAGE_SIZE`."""
    return {
        **base,
        "WSGROUPS_TEST_PERMESSAGE_DEFLATE": "1" if deflate else "0",
        "WSGROUPS_TEST_MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE),
    }


@dataclass
class Row:
    """The outcome of one server and mode."""

    server: str
    deflate: bool
    outcomes: list[Outcome]
    stock_failures: dict[str, Outcome]
    seconds: float

    def unexpected(self) -> dict[str, Outcome]:
        known = KNOWN_FAILURES[self.server]
        return {case: outcome for case, outcome in failures(self.outcomes).items() if case not in known}


def _serve_and_run(
    processes: ProcessGroup, kind: str, application: str, env: dict[str, str], cases: Sequence[str], concurrency: int
) -> list[Outcome]:
    processes.env = env
    name = f"{kind}-{'stock' if application == STOCK_APPLICATION else 'wsgroups'}-{int(time.time() * 1000)}"
    server = processes.start_server(kind, name, application=application, uvicorn_options=["--no-access-log"])
    with processes.running(server):
        return run_cases(f"ws://{LOOPBACK}:{server.port}{ENDPOINT}", cases, concurrency)


def run_server(
    processes: ProcessGroup,
    kind: str,
    base_env: dict[str, str],
    deflate: bool,
    cases: Sequence[str],
    concurrency: int,
) -> Row:
    """Run ``cases`` under ``kind`` serving wsgroups, then its failures against the stock echo."""
    started = time.monotonic()
    env = server_env(base_env, deflate)
    outcomes = _serve_and_run(processes, kind, WSGROUPS_APPLICATION, env, cases, concurrency)
    failed = failures(outcomes)
    stock: dict[str, Outcome] = {}
    if failed:
        stock = failures(_serve_and_run(processes, kind, STOCK_APPLICATION, env, sorted(failed), concurrency))
    return Row(kind, deflate, outcomes, stock, time.monotonic() - started)


def report(rows: Sequence[Row], command: str) -> str:
    """The Markdown report of a run."""
    lines = [
        "# Autobahn conformance",
        "",
        f"`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on the echo endpoint",
        f"`{ENDPOINT}` of the test project; the case files of the Autobahn test suite run by kosoku.",
        "",
        "| server | permessage-deflate | cases | passed | known failures | other failures | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        failed = failures(row.outcomes)
        known = sorted(set(failed) & set(KNOWN_FAILURES[row.server]), key=_case_key)
        lines.append(
            f"| {row.server} | {'on' if row.deflate else 'off'} | {len(row.outcomes)} | "
            f"{len(row.outcomes) - len(failed)} | {', '.join(known) or '-'} | "
            f"{', '.join(sorted(row.unexpected(), key=_case_key)) or '-'} | {row.seconds:.0f} |"
        )
    lines += ["", "Known failures (the server program's own; its stock echo fails them too):", ""]
    for server, cases in KNOWN_FAILURES.items():
        for case, reason in cases.items():
            seen = [row for row in rows if row.server == server and case in failures(row.outcomes)]
            for row in seen:
                ours = failures(row.outcomes)[case]
                stock = "the stock server fails it too" if case in row.stock_failures else "the stock server passes it"
                reason += (
                    f" (deflate {'on' if row.deflate else 'off'}: {ours.behavior} / {ours.behavior_close}, "
                    f"close code {ours.remote_close_code}; {stock})"
                )
            lines.append(f"- {server} {case}: {reason}")
    unexpected = [(row, outcome) for row in rows for outcome in row.unexpected().values()]
    if unexpected:
        lines += ["", "Other failures:", ""]
        for row, outcome in unexpected:
            stock = "stock fails too" if outcome.case_id in row.stock_failures else "stock passes"
            lines.append(
                f"- {row.server} ({'on' if row.deflate else 'off'}) {outcome.case_id}: {outcome.behavior} / "
                f"{outcome.behavior_close}, close code {outcome.remote_close_code} ({stock}): {outcome.detail}"
            )
    return "\n".join(lines) + "\n"


def _case_key(case: str) -> list[int]:
    return [int(part) for part in case.split(".")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="append", choices=SERVERS, help="repeatable (default: all three)")
    parser.add_argument("--deflate", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--case",
        action="append",
        help="case id or glob, repeatable (default: protocol cases; with deflate on, 12.x and 13.x too)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="cases run at once (default 1)")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "CONFORMANCE.md")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--url", help="only run the cases against this endpoint; print each outcome as JSON")
    args = parser.parse_args(argv)
    if args.url:
        _print_outcomes(args.url, args.case or PROTOCOL_CASES, args.concurrency)
        return 0
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.deflate]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="wsgroups-conformance-") as tmp:
        workdir = Path(tmp)
        base_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "SQLITE_PATH": str(workdir / "conformance.sqlite3"),
        }
        base_env.pop("DATABASE_URL", None)
        with ProcessGroup(workdir, base_env, grace=10) as processes:
            base_env["REDIS_URL"] = processes.redis_url(args.redis_url, log=print)
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=ROOT,
                env=base_env,
                check=True,
                timeout=300,
            )
            for kind in args.server or SERVERS:
                for deflate in modes:
                    cases = args.case or (PROTOCOL_CASES + COMPRESSION_CASES if deflate else PROTOCOL_CASES)
                    row = run_server(processes, kind, base_env, deflate, cases, args.concurrency)
                    print(
                        f"{kind} deflate {'on' if deflate else 'off'}: {len(row.outcomes)} cases, "
                        f"failed {sorted(failures(row.outcomes), key=_case_key)} in {row.seconds:.0f} s",
                        flush=True,
                    )
                    rows.append(row)
    command = " ".join(["python -m bench.conformance", *(argv if argv is not None else sys.argv[1:])])
    text = report(rows, command.strip())
    args.report.write_text(text)
    print(text)
    return 1 if any(row.unexpected() for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
