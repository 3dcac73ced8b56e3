"""A channel layer sharded over two Redis servers, as the README's scale-out section sets it up.

Two servers (daphne and uvicorn) hold sockets; a third process sends to them by ID and
by group broadcast. Every message is counted: with channels_redis's own hashing, about
half of all processes would never receive anything sent to them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import ROOT, Server, run_ctl, start_server
from .services import free_port, start_redis

pytestmark = pytest.mark.e2e

SOCKETS_PER_SERVER = 100
ROUNDS = 4
BROADCASTS = 3
DIRECT = 3


@pytest.fixture(scope="module")
def shard_urls() -> Iterator[str]:
    ports = [free_port(), free_port()]
    procs = [start_redis(port) for port in ports]
    yield ",".join(f"redis://127.0.0.1:{port}/0" for port in ports)
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def sharded_env(base_env: dict[str, str], shard_urls: str, tmp_path: Path) -> dict[str, str]:
    env = {**base_env, "REDIS_URL": shard_urls}
    if "SQLITE_PATH" in env:
        env["SQLITE_PATH"] = str(tmp_path / "shards.sqlite3")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
    return env


async def _open(server: Server, group: str) -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/{group}", max_size=None)
    return ws, int(json.loads(await ws.recv())["id"])


async def _read(ws: ClientConnection, expected: int, seconds: float) -> list[str]:
    frames: list[str] = []
    try:
        while len(frames) < expected:
            frames.append(str(await asyncio.wait_for(ws.recv(), seconds)))
    except (TimeoutError, asyncio.TimeoutError):
        pass
    return frames


def _round(env: dict[str, str], workdir: Path, number: int) -> tuple[int, Counter[str], list[str]]:
    group = f"shards{number}"
    servers = [start_server(kind, env, workdir) for kind in ("daphne", "uvicorn")]
    try:

        async def scenario() -> tuple[int, Counter[str], list[str]]:
            opened = [await _open(server, group) for server in servers for _ in range(SOCKETS_PER_SERVER)]
            ids = [socket_id for _, socket_id in opened]
            readers = [asyncio.create_task(_read(ws, BROADCASTS + DIRECT, 15)) for ws, _ in opened]
            outcome = await asyncio.to_thread(
                run_ctl,
                env,
                "fanout",
                group,
                ",".join(map(str, ids)),
                str(number),
                "--count",
                str(BROADCASTS),
                "--repeat",
                str(DIRECT),
            )
            received = await asyncio.gather(*readers)
            for ws, _ in opened:
                await ws.close()
            problems = []
            if outcome["broadcast"] != [len(ids)] * BROADCASTS:
                problems.append(f"broadcast counts {outcome['broadcast']}, expected {len(ids)} each")
            if outcome["taken"] != len(ids) * DIRECT:
                problems.append(f"sends by ID: {outcome['taken']} taken of {len(ids) * DIRECT}")
            if outcome["last_dead"] is not False:
                problems.append(f"is_dead() of a live socket answered {outcome['last_dead']!r}")
            tally = Counter(frame for frames in received for frame in frames)
            return len(ids), tally, problems

        return asyncio.run(scenario())
    finally:
        for server in servers:
            server.stop(signal.SIGTERM)


def test_four_rounds_of_fresh_processes_over_two_shards_lose_nothing(sharded_env, tmp_path):
    expected_total = 0
    received_total = 0
    problems: list[str] = []
    for number in range(ROUNDS):
        sockets, tally, round_problems = _round(sharded_env, tmp_path, number)
        problems += [f"round {number}: {problem}" for problem in round_problems]
        for k in range(BROADCASTS):
            if tally[f"b{number}-{k}"] != sockets:
                problems.append(f"round {number}: broadcast {k} reached {tally[f'b{number}-{k}']} of {sockets}")
        if tally[f"d{number}"] != sockets * DIRECT:
            problems.append(f"round {number}: {tally[f'd{number}']} of {sockets * DIRECT} sends by ID arrived")
        expected_total += sockets * (BROADCASTS + DIRECT)
        received_total += sum(tally.values())
    assert not problems, "\n".join(problems)
    assert received_total == expected_total == ROUNDS * 2 * SOCKETS_PER_SERVER * (BROADCASTS + DIRECT)


def test_every_process_logs_the_shard_count(sharded_env, tmp_path):
    server = start_server("daphne", sharded_env, tmp_path)
    try:

        async def scenario() -> None:
            ws, _ = await _open(server, "echo")
            await ws.close()

        asyncio.run(scenario())
    finally:
        server.stop(signal.SIGTERM)
    assert "the channel layer has 2 shards" in server.log()
