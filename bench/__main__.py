"""``python -m bench``: run the scenarios against wsgroups and a bare Channels consumer.

Starts its own servers (and a private Redis when ``--redis-url`` does not answer, or
``--shards`` private ones that the channel layer is sharded over), runs each selected
scenario against each target with fresh server processes, stops every process it
started, prints a Markdown table and writes the raw results as JSON lines. Exits 1 when
a scenario failed with an error (not for "not available yet").
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

from bench import client
from bench.harness import Context, Options, Record
from bench.report import samples_table, table, write_jsonl
from bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS, run_scenario
from bench.servers import ROOT, SERVER_KINDS, ProcessGroup, run_command

DEFAULT_OUT = ROOT / "bench" / "results" / "latest.jsonl"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--server", choices=SERVER_KINDS, default="daphne")
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)}, or all (default: all but soak and storm)",
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a private redis-server on a free port instead of using --redis-url",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON lines results file")
    parser.add_argument(
        "--redis-url",
        help=f"Redis on 127.0.0.1 to use (default {DEFAULT_REDIS}; its bench:* and asgi* keys are "
        "deleted); a private redis-server is started when it does not answer",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="shard the channel layer over this many private redis-servers (every process of the "
        "run gets their URLs, comma-separated, in REDIS_URL); 1 (default): one Redis, as --redis-url says",
    )
    parser.add_argument(
        "--permessage-deflate",
        action="store_true",
        help="servers with WSGROUPS['PERMESSAGE_DEFLATE'] on, and a client that offers it (as browsers do)",
    )
    defaults = Options()
    for option in dataclasses.fields(Options):
        if option.name == "server":
            continue
        flag = "--" + option.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, option.name)), default=getattr(defaults, option.name))
    args = parser.parse_args(argv)
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    if args.shards > 1 and args.redis_url is not None:
        parser.error("--shards above 1 starts its own redis-servers: leave out --redis-url")
    return args


def _options(args: argparse.Namespace) -> Options:
    return Options(**{option.name: getattr(args, option.name) for option in dataclasses.fields(Options)})


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


async def run(
    options: Options,
    names: list[str],
    redis_url: str | None,
    log_dir: Path,
    db_dir: Path,
    samples: list[dict[str, Any]],
    shards: int = 1,
    deflate: bool = False,
) -> list[Record]:
    """Set up Redis (``redis_url``, or a private one when None; ``shards`` private ones when
    above 1) and the database, then run ``names`` against their targets in order; time
    series go to ``samples``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "PYTHONPATH": str(ROOT),
        "SQLITE_PATH": str(db_dir / "bench.sqlite3"),
        "WSGROUPS_LOG_LEVEL": "WARNING",
        "WSGROUPS_BENCH_PERMESSAGE_DEFLATE": "1" if deflate else "0",
    }
    records: list[Record] = []
    with ProcessGroup(log_dir, env) as processes:
        if shards > 1:
            redis_url = processes.sharded_redis_url(shards)
            _log(f"channel layer sharded over {shards} private redis-servers: {redis_url}")
        else:
            redis_url = processes.redis_url(redis_url, _log)
        env["REDIS_URL"] = os.environ["REDIS_URL"] = redis_url
        await run_command([sys.executable, "manage.py", "migrate", "--noinput"], env, 300)
        ctx = Context(options, processes, env, samples=samples, shards=shards)
        for name in names:
            _, _, targets = SCENARIOS[name]
            for target in targets:
                started = time.monotonic()
                result = await run_scenario(ctx, name, target)
                records.extend(result)
                state = "; ".join(sorted({r.status for r in result}))
                _log(f"[{name} / {target}] {state} in {time.monotonic() - started:.1f}s")
    return records


def _run_loop(coroutine: Coroutine[Any, Any, list[Record]]) -> list[Record]:
    """Run the client on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    result: list[Record] = uvloop.run(coroutine)  # asyncio.Runner(loop_factory=) is 3.11+
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = _options(args)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if names == ["all"]:
        names = list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    soak = options.soak_sockets + int(options.soak_churn_per_minute)
    biggest = max(
        options.broadcast_sockets,
        options.ids_sockets,
        options.tick_sockets,
        options.memory_sockets,
        soak,
        options.storm_sockets,
    )
    fd_limit = client.raise_fd_limit(biggest + 4096)
    signal.signal(signal.SIGTERM, _on_sigterm)
    log_dir = args.out.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old_log in log_dir.glob("*.log"):
        old_log.unlink()
    started = datetime.datetime.now(datetime.timezone.utc)
    samples: list[dict[str, Any]] = []
    redis_url = None if args.private_redis else (args.redis_url or DEFAULT_REDIS)
    client.offer_compression(args.permessage_deflate)
    with tempfile.TemporaryDirectory(prefix="wsgroups-bench-") as db_dir:
        records = _run_loop(
            run(options, names, redis_url, log_dir, Path(db_dir), samples, args.shards, args.permessage_deflate)
        )
    command = shlex.join([Path(sys.executable).name, "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    run_info = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        "command": command,
        "fd_limit": fd_limit,
        "logs": str(log_dir),
    }
    if args.shards > 1:
        # Only then, so that a one-Redis run's results stay as they were.
        run_info["shards"] = args.shards
    if args.permessage_deflate:
        run_info["permessage_deflate"] = True
    write_jsonl(args.out, run_info, options, records, samples)
    print(table(records, args.shards))
    if samples:
        print("\n" + samples_table(samples))
    print(f"\nraw results: {args.out}  server logs: {log_dir}")
    return 1 if any(record.status == "error" for record in records) else 0


if __name__ == "__main__":
    sys.exit(main())
