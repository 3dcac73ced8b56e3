"""A cluster whose processes are on different hosts, as far as TCP can tell.

Each Redis shard and each server process listens on an address of its own (Linux routes
all of 127.0.0.0/8 to the loopback interface): the channel layer is sharded over Redis
servers on 127.0.0.2 and 127.0.0.3, a daphne server is on 127.0.0.4, a uvicorn server on
127.0.0.5, and the crash test's victim on 127.0.0.6. They share an SQLite file of this
module's own. Nothing assumes 127.0.0.1: servers are reached, and reach Redis, only at
their own addresses. The two servers read their channels from different shards (uvicorn
is restarted until it does), so that what one sends the other goes through the other
Redis.

Rooms span the hosts too: joined from a separate process, with presence, counts and
broadcasts across both servers, and a killed server's members taken out of them.

Every message is counted: texts are unique, and each socket must get exactly the frames
meant for it — none lost, none duplicated (a short quiet period after the expected frames
catches late duplicates).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .conftest import ROOT, Server, run_ctl, start_server
from .services import free_port, start_redis

pytestmark = pytest.mark.e2e

SHARD_HOSTS = ("127.0.0.2", "127.0.0.3")
DAPHNE_HOST = "127.0.0.4"
UVICORN_HOST = "127.0.0.5"
VICTIM_HOST = "127.0.0.6"
ALL_HOSTS = (*SHARD_HOSTS, DAPHNE_HOST, UVICORN_HOST, VICTIM_HOST)

#: The cluster timing of every process of this module (tests/settings.py reads them).
HEARTBEAT_INTERVAL = 1.0
PROCESS_TIMEOUT = 4.0
#: Allowance for a loaded machine (other test runs on two cores) on top of the bound.
SLACK = 5.0
#: Seconds to wait for each expected frame, and of silence after the last one.
FRAME_TIMEOUT = 20.0
QUIET = 1.0

PER_SERVER = 10
#: An ID of a block no process ever held.
UNKNOWN_ID = (987654 << 22) | 1
#: Starts of uvicorn allowed to find a shard other than daphne's (each has one chance in two).
SHARD_TRIES = 12
SHARD_LINE = re.compile(r"the channel layer has 2 shards; this process receives on \S+ \(shard (\d+)\)")


def _check_loopback_addresses() -> None:
    """Listen and connect on every address; fail (never skip) with the reason if one cannot."""
    for host in ALL_HOSTS:
        error = None
        try:
            with socket.socket() as listener:
                listener.bind((host, 0))
                listener.listen()
                with socket.create_connection(listener.getsockname(), timeout=5):
                    pass
        except OSError as exc:
            error = exc
        if error is not None:
            pytest.fail(
                f"cannot listen on and connect to {host} ({error}): these tests put each process on its own "
                "loopback address and need all of 127.0.0.0/8 routed to the loopback interface, as Linux does "
                f"(elsewhere, add the addresses: e.g. `sudo ifconfig lo0 alias {host}` on macOS)",
                pytrace=False,
            )


@dataclass
class Hosts:
    """Two Redis shards and two servers, each on its own address, sharing a database."""

    env: dict[str, str]
    shards: list[tuple[str, int]]
    daphne: Server
    uvicorn: Server
    #: The shard each server reads its channel from: daphne's, then uvicorn's.
    server_shards: tuple[int, int]

    @property
    def servers(self) -> tuple[Server, Server]:
        return self.daphne, self.uvicorn

    def ctl(self, *args: str) -> Any:
        return run_ctl(self.env, *args, timeout=90)

    async def actl(self, *args: str) -> Any:
        return await asyncio.to_thread(self.ctl, *args)


def _migrated_env(base_env: dict[str, str], workdir: Path, redis_url: str) -> dict[str, str]:
    env = {
        **base_env,
        "REDIS_URL": redis_url,
        "SQLITE_PATH": str(workdir / "hosts.sqlite3"),
        "WSGROUPS_TEST_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "WSGROUPS_TEST_PROCESS_TIMEOUT": str(PROCESS_TIMEOUT),
    }
    env.pop("DATABASE_URL", None)  # the module's own SQLite file, whatever the run's database
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    return env


@pytest.fixture(scope="module")
def hosts(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    _check_loopback_addresses()
    workdir = tmp_path_factory.mktemp("hosts")
    shards = [(host, free_port(host)) for host in SHARD_HOSTS]
    redis_procs: list[subprocess.Popen[bytes]] = []
    servers: list[Server] = []
    try:
        for host, port in shards:
            redis_procs.append(start_redis(port, host=host))
        env = _migrated_env(base_env, workdir, ",".join(f"redis://{host}:{port}/0" for host, port in shards))
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(start_server, kind, env, workdir, host=host)
                for kind, host in (("daphne", DAPHNE_HOST), ("uvicorn", UVICORN_HOST))
            ]
            errors = []
            for future in futures:
                try:
                    servers.append(future.result())
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
        server_shards = [_receiving_shard(server) for server in servers]
        starts = 1
        while server_shards[0] == server_shards[1]:
            if starts == SHARD_TRIES:
                pytest.fail(f"uvicorn read from daphne's shard in {SHARD_TRIES} starts in a row", pytrace=False)
            servers.pop().stop(signal.SIGTERM)
            servers.append(start_server("uvicorn", env, workdir, host=UVICORN_HOST))
            server_shards[1] = _receiving_shard(servers[1])
            starts += 1
        yield Hosts(env, shards, *servers, (server_shards[0], server_shards[1]))
    finally:
        for server in servers:
            server.stop(signal.SIGKILL, timeout=5)
        for proc in redis_procs:
            proc.terminate()
            proc.wait(10)


def _receiving_shard(server: Server) -> int:
    """The shard ``server`` reads its channel from, known once it joins the cluster (at its
    first socket)."""

    async def first_socket() -> None:
        client = await _open(server, "echo")
        await client.ws.close()

    asyncio.run(first_socket())
    deadline = time.monotonic() + 20
    while not (match := SHARD_LINE.search(server.log())):
        assert time.monotonic() < deadline, f"{server.kind} logged no shard:\n{server.log()[-3000:]}"
        time.sleep(0.05)
    return int(match.group(1))


# --- clients -------------------------------------------------------------------------


@dataclass
class Client:
    server: Server
    ws: ClientConnection
    id: int


async def _open(server: Server, group: str) -> Client:
    ws = await asyncio.wait_for(connect(f"{server.url}/ws/{group}", max_size=None, open_timeout=30), 40)
    hello = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
    assert hello["group"] == group, hello
    return Client(server, ws, int(hello["id"]))


async def _open_many(server: Server, group: str, count: int) -> list[Client]:
    return list(await asyncio.gather(*(_open(server, group) for _ in range(count))))


async def _close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(client.ws.close() for client in clients), return_exceptions=True)


async def _read(ws: ClientConnection, expected: int) -> list[str]:
    """The ``expected`` frames, then any that follow within ``QUIET`` seconds (fewer if they
    stop coming for ``FRAME_TIMEOUT`` seconds or the connection closes)."""
    frames: list[str] = []
    try:
        while True:
            timeout = FRAME_TIMEOUT if len(frames) < expected else QUIET
            frames.append(str(await asyncio.wait_for(ws.recv(), timeout)))
    except (TimeoutError, asyncio.TimeoutError, ConnectionClosed):
        return frames


async def _read_until_close(ws: ClientConnection, timeout: float) -> tuple[list[str], int | None]:
    """Every frame until the server's close frame; its code (None: no close within ``timeout``)."""
    frames: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            frames.append(str(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))))
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd else None
    except (TimeoutError, asyncio.TimeoutError):
        return frames, None


def _tally(expected: dict[int, list[str]], received: dict[int, list[str]], ordered: bool = False) -> list[str]:
    """What each socket lacked or got too much of; with ``ordered``, frames out of order."""
    problems = []
    for socket_id, wanted in expected.items():
        got = received[socket_id]
        lost, extra = Counter(wanted) - Counter(got), Counter(got) - Counter(wanted)
        if lost:
            problems.append(f"socket {socket_id}: lost {sorted(lost.elements())}")
        if extra:
            problems.append(f"socket {socket_id}: unexpected or duplicated {sorted(extra.elements())}")
        if ordered and not lost and not extra and got != wanted:
            problems.append(f"socket {socket_id}: out of order {got}")
    return problems


def _http(server: Server, path: str) -> Any:
    with urllib.request.urlopen(f"{server.http}{path}", timeout=60) as response:
        return json.loads(response.read())


async def _ahttp(server: Server, path: str) -> Any:
    return await asyncio.to_thread(_http, server, path)


def _disconnects(servers: list[Server], ids: set[int]) -> Counter[int]:
    """How many times the disconnect handler of each of ``ids`` ran, over ``servers``."""
    return Counter(row["id"] for server in servers for row in server.events("disconnect") if row["id"] in ids)


async def _wait_for_disconnects(servers: list[Server], ids: set[int], timeout: float) -> Counter[int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = _disconnects(servers, ids)
        if set(seen) >= ids or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)


def _wsbroadcast(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "wsbroadcast", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


# --- tests ---------------------------------------------------------------------------


def test_each_shard_and_server_listens_on_its_own_address(hosts: Hosts) -> None:
    import redis

    for host, port in hosts.shards:
        client = redis.Redis(host=host, port=port, socket_timeout=10)
        try:
            assert client.config_get("bind") == {"bind": host}
        finally:
            client.close()

    async def scenario() -> None:
        clients = [await _open(server, "echo") for server in hosts.servers]
        for client in clients:
            await client.ws.send(f"hello {client.server.host}")
            assert await asyncio.wait_for(client.ws.recv(), FRAME_TIMEOUT) == f"hello {client.server.host}"
        await _close_all(clients)

    asyncio.run(scenario())
    assert f"Listening on TCP address {DAPHNE_HOST}:{hosts.daphne.port}" in hosts.daphne.log()
    assert f"Uvicorn running on http://{UVICORN_HOST}:{hosts.uvicorn.port}" in hosts.uvicorn.log()
    for server in hosts.servers:
        assert "the channel layer has 2 shards" in server.log(), server.log()[-3000:]
    assert sorted(hosts.server_shards) == [0, 1]


def test_sends_by_id_from_a_separate_process_reach_sockets_on_both_hosts(hosts: Hosts) -> None:
    count = 5

    async def scenario() -> list[str]:
        clients = [c for server in hosts.servers for c in await _open_many(server, "hosts-direct", PER_SERVER)]
        readers = [asyncio.create_task(_read(c.ws, count)) for c in clients]
        ids = ",".join(str(c.id) for c in clients)
        taken = await hosts.actl("send-many", ids, "direct {id} #{i}", "--count", str(count))
        received = dict(zip((c.id for c in clients), await asyncio.gather(*readers), strict=True))
        await _close_all(clients)
        expected = {c.id: [f"direct {c.id} #{i}" for i in range(count)] for c in clients}
        problems = _tally(expected, received, ordered=True)  # one sender: its frames arrive in order
        if taken != len(clients) * count:
            problems.append(f"wsctl: {taken} of {len(clients) * count} sends taken")
        return problems

    problems = asyncio.run(scenario())
    assert not problems, "\n".join(problems)


def test_servers_send_by_id_to_each_others_sockets(hosts: Hosts) -> None:
    async def scenario() -> list[str]:
        clients = [c for server in hosts.servers for c in await _open_many(server, "hosts-peer", PER_SERVER)]
        readers = [asyncio.create_task(_read(c.ws, len(hosts.servers))) for c in clients]
        problems = []
        for sender in hosts.servers:  # each server sends to its own sockets and to the other's
            answers = await asyncio.gather(
                *(_ahttp(sender, f"/send/{c.id}?text=from-{sender.kind}-to-{c.id}") for c in clients)
            )
            problems += [
                f"{sender.kind} /send/{c.id}: {a}" for c, a in zip(clients, answers, strict=True) if a != {"sent": True}
            ]
        received = dict(zip((c.id for c in clients), await asyncio.gather(*readers), strict=True))
        await _close_all(clients)
        expected = {c.id: [f"from-{s.kind}-to-{c.id}" for s in hosts.servers] for c in clients}
        return problems + _tally(expected, received)

    problems = asyncio.run(scenario())
    assert not problems, "\n".join(problems)


def test_group_broadcasts_reach_sockets_on_both_hosts(hosts: Hosts) -> None:
    group = "hosts-room"

    async def scenario() -> list[str]:
        clients = [c for server in hosts.servers for c in await _open_many(server, group, PER_SERVER)]
        excluded = {clients[0].id, clients[PER_SERVER].id}  # one on each server
        readers = [asyncio.create_task(_read(c.ws, 2 if c.id in excluded else 3)) for c in clients]
        problems = []
        exclude = [arg for socket_id in sorted(excluded) for arg in ("--exclude", str(socket_id))]
        taken = await hosts.actl("broadcast", group, "broadcast from wsctl", *exclude)
        if taken != len(clients) - len(excluded):
            problems.append(f"wsctl broadcast: {taken} took it, expected {len(clients) - len(excluded)}")
        for server in hosts.servers:
            answer = await _ahttp(server, f"/broadcast/{group}?text=broadcast-from-{server.kind}")
            if answer != {"sent": len(clients), "members": len(clients)}:
                problems.append(f"broadcast from {server.kind}: {answer}, expected {len(clients)} sent and members")
        received = dict(zip((c.id for c in clients), await asyncio.gather(*readers), strict=True))
        await _close_all(clients)
        expected = {
            c.id: [f"broadcast-from-{s.kind}" for s in hosts.servers]
            + ([] if c.id in excluded else ["broadcast from wsctl"])
            for c in clients
        }
        return problems + _tally(expected, received)

    problems = asyncio.run(scenario())
    assert not problems, "\n".join(problems)


def test_is_dead_answers_across_hosts(hosts: Hosts) -> None:
    async def scenario() -> None:
        clients = [await _open_many(server, "echo", 3) for server in hosts.servers]
        closed: list[Client] = []
        for by_client, by_server, _ in clients:
            await by_client.ws.close()  # closed by the client ...
            await by_server.ws.send("close:4000:done here")  # ... and by the server
            assert (await _read_until_close(by_server.ws, FRAME_TIMEOUT))[1] == 4000
            closed += [by_client, by_server]
        live = [still for _, _, still in clients]
        seen = await _wait_for_disconnects(list(hosts.servers), {c.id for c in closed}, 20)
        assert seen == Counter({c.id: 1 for c in closed}), "the disconnect handlers did not run once each"

        expected = {str(c.id): False for c in live} | {str(c.id): True for c in closed} | {str(UNKNOWN_ID): True}
        assert await hosts.actl("dead-map", ",".join(expected)) == expected  # from a separate process
        for asker in hosts.servers:  # from each server, about its own sockets and the other's
            answers = await asyncio.gather(*(_ahttp(asker, f"/is-dead/{socket_id}") for socket_id in expected))
            assert dict(zip(expected, (a["dead"] for a in answers), strict=True)) == expected, asker.kind
        for client in live:
            await client.ws.send(f"alive {client.id}")
            assert await asyncio.wait_for(client.ws.recv(), FRAME_TIMEOUT) == f"alive {client.id}"
        await _close_all(live)

    asyncio.run(scenario())


def test_kill_9_of_a_server_reaps_its_sockets_once_on_another_host(hosts: Hosts, tmp_path: Path) -> None:
    victim = start_server("uvicorn", hosts.env, tmp_path, host=VICTIM_HOST)
    bound = PROCESS_TIMEOUT + HEARTBEAT_INTERVAL + SLACK
    everyone = [victim, *hosts.servers]

    async def scenario() -> None:
        doomed = await _open_many(victim, "echo", 5)
        kept = [c for server in hosts.servers for c in await _open_many(server, "echo", 3)]
        doomed_ids = {c.id for c in doomed}
        os.killpg(victim.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.process.wait(10)

        seen = await _wait_for_disconnects(list(hosts.servers), doomed_ids, bound + 20)
        elapsed = time.monotonic() - killed_at
        assert set(seen) == doomed_ids, f"disconnect handlers ran for {sorted(seen)} of {sorted(doomed_ids)}"
        assert elapsed <= bound, f"reaping took {elapsed:.1f}s, more than {bound:.0f}s"
        await asyncio.sleep(2.5 * HEARTBEAT_INTERVAL)  # later reaping rounds must not run them again
        every_id = doomed_ids | {c.id for c in kept}
        assert _disconnects(everyone, every_id) == Counter(dict.fromkeys(doomed_ids, 1))
        reapers = [s.kind for s in hosts.servers if "stopped sending heartbeats; 5 sockets reaped" in s.log()]
        assert len(reapers) == 1, f"the victim was reaped by {reapers}"

        expected = {str(c.id): True for c in doomed} | {str(c.id): False for c in kept}
        assert await hosts.actl("dead-map", ",".join(expected)) == expected
        for asker in hosts.servers:
            answers = await asyncio.gather(*(_ahttp(asker, f"/send/{c.id}?text=too-late") for c in doomed))
            assert answers == [{"sent": False}] * len(doomed), asker.kind
        for client in kept:
            await client.ws.send(f"still here {client.id}")
        replies = await asyncio.gather(*(_read(c.ws, 1) for c in kept))
        assert replies == [[f"still here {c.id}"] for c in kept]
        await _close_all(kept)

    try:
        asyncio.run(scenario())
    finally:
        victim.stop(signal.SIGKILL, timeout=5)


async def _ask(client: Client, command: str) -> Any:
    """The JSON answer of the test app's ``rooms`` handler to ``command``."""
    await client.ws.send(command)
    return json.loads(await asyncio.wait_for(client.ws.recv(), FRAME_TIMEOUT))


def test_rooms_span_both_hosts_joined_from_the_shell_with_counts_and_presence(hosts: Hosts) -> None:
    room = "hosts-room"

    async def scenario() -> list[str]:
        by_server = [await _open_many(server, "rooms", PER_SERVER) for server in hosts.servers]
        clients = [c for side in by_server for c in side]
        problems = []
        # Joined from a separate process, each server's sockets with their host as meta.
        for server, side in zip(hosts.servers, by_server, strict=True):
            ids = ",".join(str(c.id) for c in side)
            joined = await hosts.actl("room-join", ids, room, json.dumps({"host": server.kind}))
            if joined != {str(c.id): True for c in side}:
                problems.append(f"joins from the shell on {server.kind}: {joined}")
        presence = {str(c.id): {"host": c.server.kind} for c in clients}
        # Presence seen from each host covers the other host's members, with their meta.
        for side in by_server:
            seen = await _ask(side[0], f"presence:{room}")
            if seen != {"presence": presence}:
                problems.append(f"presence seen from {side[0].server.kind}: {seen}")
        if await hosts.actl("room-presence", room) != presence:
            problems.append("presence seen from the shell differs")

        # Room broadcasts: from the shell (numbered, one member on each host excluded) and
        # from a handler on each host (to the others); every count spans both hosts.
        excluded = {by_server[0][1].id, by_server[1][1].id}
        exclude = [arg for socket_id in sorted(excluded) for arg in ("--exclude", str(socket_id))]
        counts = await hosts.actl("room-broadcast", room, "shell-{i}", "--count", "5", *exclude)
        if counts != [len(clients) - len(excluded)] * 5:
            problems.append(f"room broadcasts from the shell reached {counts}, expected {len(clients) - 2} each")
        senders = [side[0] for side in by_server]
        for sender in senders:
            await sender.ws.send(f"say:{room}:from-{sender.server.kind}")
        expected = {}
        for c in clients:
            wanted = [] if c.id in excluded else [f"shell-{i}" for i in range(5)]
            wanted += [f"from-{s.server.kind}" for s in senders if s is not c]
            wanted += [json.dumps({"said": len(clients) - 1})] if c in senders else []
            expected[c.id] = wanted
        readers = [asyncio.create_task(_read(c.ws, len(expected[c.id]))) for c in clients]
        received = dict(zip((c.id for c in clients), await asyncio.gather(*readers), strict=True))
        for c in clients:
            shell_order = [frame for frame in received[c.id] if frame.startswith("shell-")]
            if shell_order != sorted(shell_order):
                problems.append(f"socket {c.id}: the shell's room broadcasts out of order {shell_order}")
        problems += _tally(expected, received)

        # A leave from the shell takes one member out everywhere.
        leaver = by_server[1][-1]
        if await hosts.actl("room-leave", str(leaver.id), room) is not True:
            problems.append("the leave from the shell failed")
        if leaver.id in await hosts.actl("room-sockets", room) or (await _ask(leaver, "rooms")) != {"rooms": []}:
            problems.append("the socket that left is still a member")
        seen = await _ask(by_server[0][0], f"say:{room}:after-leave")
        if seen != {"said": len(clients) - 2}:
            problems.append(f"broadcast after the leave reached {seen}, expected {len(clients) - 2}")
        late = await asyncio.gather(*(_read(c.ws, 0 if c in (leaver, by_server[0][0]) else 1) for c in clients))
        problems += _tally(
            {c.id: [] if c in (leaver, by_server[0][0]) else ["after-leave"] for c in clients},
            dict(zip((c.id for c in clients), late, strict=True)),
        )
        await _close_all(clients)
        return problems

    problems = asyncio.run(scenario())
    assert not problems, "\n".join(problems)


def test_kill_9_of_a_server_empties_its_sockets_from_the_room_and_its_reaper_lists_their_rooms(
    hosts: Hosts, tmp_path: Path
) -> None:
    room = "hosts-crash"
    victim = start_server("uvicorn", hosts.env, tmp_path, host=VICTIM_HOST)
    bound = PROCESS_TIMEOUT + HEARTBEAT_INTERVAL + SLACK

    async def scenario() -> None:
        doomed = await _open_many(victim, "rooms", 4)
        kept = [c for server in hosts.servers for c in await _open_many(server, "rooms", 2)]
        everyone = doomed + kept
        joined = await hosts.actl("room-join", ",".join(str(c.id) for c in everyone), room)
        assert joined == {str(c.id): True for c in everyone}
        assert await _ask(doomed[0], "join:second") == {"joined": True}  # from a handler on the victim
        assert sorted(await hosts.actl("room-sockets", room)) == sorted(c.id for c in everyone)
        await asyncio.sleep(0.5)  # the registry records rooms a few milliseconds behind
        os.killpg(victim.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.process.wait(10)

        doomed_ids = {c.id for c in doomed}
        seen = await _wait_for_disconnects(list(hosts.servers), doomed_ids, bound + 20)
        assert set(seen) == doomed_ids, f"disconnect handlers ran for {sorted(seen)} of {sorted(doomed_ids)}"
        assert time.monotonic() - killed_at <= bound + 20
        # The handler the reaper ran on another host listed the rooms each socket was in.
        rooms = {
            row["id"]: row["rooms"]
            for server in hosts.servers
            for row in server.events("disconnect")
            if row["id"] in doomed_ids
        }
        assert rooms == {c.id: ["hosts-crash", "second"] if c is doomed[0] else ["hosts-crash"] for c in doomed}

        assert await hosts.actl("room-presence", room) == {str(c.id): None for c in sorted(kept, key=lambda c: c.id)}
        assert await hosts.actl("room-sockets", "second") == []
        assert await hosts.actl("room-broadcast", room, "after the crash") == len(kept)
        received = await asyncio.gather(*(_read(c.ws, 1) for c in kept))
        assert received == [["after the crash"]] * len(kept)
        await _close_all(kept)

    try:
        asyncio.run(scenario())
    finally:
        victim.stop(signal.SIGKILL, timeout=5)


def test_broadcaster_sends_to_subscribers_on_both_hosts_and_counts_them(hosts: Hosts) -> None:
    ticks = 2

    async def scenario() -> None:
        clients = [c for server in hosts.servers for c in await _open_many(server, "hosts-subscribed", 4)]
        bystanders = [await _open(server, "hosts-subscribed") for server in hosts.servers]  # not subscribed
        ids = ",".join(str(c.id) for c in clients)
        assert await hosts.actl("subscribe", ids) == len(clients)
        for tick in range(ticks):
            out = await asyncio.to_thread(_wsbroadcast, hosts.env, "--once", "--message", f"tick {tick} to {{id}}")
            assert f"sent {len(clients)}, disconnected 0, pruned 0" in out, out
            received = await asyncio.gather(*(_read(c.ws, 1) for c in clients))
            assert received == [[f"tick {tick} to {c.id}"] for c in clients]
        assert await hosts.actl("subscriptions", ids) == {str(c.id): ticks for c in clients}

        # At the limit: a normal close, nothing more sent, and the subscription goes.
        out = await asyncio.to_thread(_wsbroadcast, hosts.env, "--once", "--limit", str(ticks))
        assert f"sent 0, disconnected {len(clients)}, pruned 0" in out, out
        ends = await asyncio.gather(*(_read_until_close(c.ws, FRAME_TIMEOUT) for c in clients))
        assert ends == [([], 1000)] * len(clients)
        assert await hosts.actl("subscriptions", ids) == {}
        assert await asyncio.gather(*(_read(b.ws, 0) for b in bystanders)) == [[], []]
        await _close_all(bystanders)

    asyncio.run(scenario())
