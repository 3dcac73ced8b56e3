"""The benchmark scenarios and their table. Each runs against one target and returns
:class:`bench.harness.Record` rows; what they share is in :mod:`bench.harness`, the long
soak in :mod:`bench.soak`.

Targets: ``wsgroups`` (``/bench/ws``), ``bare`` (the Channels consumer at ``/bare/ws``),
both served by the same server program from ``bench.asgi``, and ``raw`` (the
``websockets`` server of :mod:`bench.ceiling`). Every scenario starts its own server
processes and stops them before it returns, so no state carries over between runs.

A wsgroups capability that does not exist yet is reported as ``not available yet``
(value None), never as a number: fan-outs first send one message to a few probe
sockets and call the capability missing when none of them arrives in time.

On a sharded channel layer (``--shards``), sends by channel name to bare consumers are
reported as ``not possible with shards`` when some of the stored names are written to a
shard their consumer does not read (see :func:`_bare_stranded`).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection

from bench import client
from bench.fanout import FANOUT_METRICS
from bench.fanout import connections as _connections
from bench.fanout import fanout_records as _fanout_records
from bench.fanout import sender as _sender
from bench.harness import (
    ID_KEYS,
    PATHS,
    PLAIN_PATHS,
    Context,
    Record,
    fresh_servers,
    mib,
    run_sender,
    wait_registered,
    wait_registered_empty,
    ws_url,
)
from bench.rooms import ROOM_BROADCAST, ROOM_CHURN, room_broadcast, room_churn
from bench.servers import run_command
from bench.soak import soak
from bench.storm import SCENARIO as STORM
from bench.storm import storm

__all__ = ["DEFAULT_SCENARIOS", "NOT_AVAILABLE", "NOT_POSSIBLE", "SCENARIOS", "Scenario", "run_scenario"]

NOT_AVAILABLE = "not available yet"
NOT_POSSIBLE = "not possible with shards"
#: File descriptors the client keeps free for everything but its connections.
FD_RESERVE = 500


def _unavailable(scenario: str, target: str, metrics: list[str], why: str, status: str = NOT_AVAILABLE) -> list[Record]:
    return [Record(scenario, target, metric, None, status, why) for metric in metrics]


async def _bare_stranded(ctx: Context) -> str:
    """On a sharded layer, why the stored bare consumers cannot all be sent to by channel
    name, or "" (always "" with one Redis, without asking).

    channels_redis 4.3 writes a ``send`` to a process-local channel on the shard of the
    whole name's hash and reads it from the shard of the part up to ``!``: when they
    differ, the message waits where nobody reads it, and once the channel holds its
    capacity the sender gets ChannelFull until it gives up.
    """
    if ctx.shards == 1:
        return ""
    found = json.loads(await run_sender(ctx, "bare-shards", [], ctx.options.timeout))
    if not found["unreachable"]:
        return ""
    return (
        f"{found['unreachable']} of {found['targets']} stored channel names are sent to another of the "
        f"{found['shards']} Redis shards than the one their consumer reads (channels_redis hashes the whole "
        "name to send, the part up to '!' to receive): their messages are never delivered and fill the "
        "channel until the sender gets ChannelFull for good"
    )


async def _probe(ctx: Context, url: str, key: str, kind: str) -> str:
    """Send one message to a few fresh sockets from a separate process; return why it
    failed (nothing arrived), or "" when it works."""
    async with _connections(ctx, [url], ctx.options.probe_sockets) as opened:
        await wait_registered(key, ctx.options.probe_sockets, ctx.options.probe_timeout + 10)
        delivery = await client.collect(
            opened.connections, 1, _sender(ctx, kind, 1), ctx.options.timeout, ctx.options.probe_timeout
        )
    if delivery.received == 0:
        return (
            f"{kind} from a separate process: 0 of {ctx.options.probe_sockets} probe "
            f"messages arrived within {ctx.options.probe_timeout:g}s"
        )
    return ""


async def _fanout(ctx: Context, scenario: str, target: str, sockets: int, messages: int, kind: str) -> list[Record]:
    # Bare sends by name on shards: the probe's few sockets could all be stranded (and so
    # report a missing feature); the check on all the sockets below says what happens.
    stranding = kind == "bare-ids" and ctx.shards > 1
    async with fresh_servers(ctx, target) as servers:
        url, key = ws_url(servers[0], PATHS[target]), ID_KEYS[target]
        why = "" if stranding else await _probe(ctx, url, key, kind)
        if why:
            return _unavailable(scenario, target, FANOUT_METRICS, why)
        await wait_registered_empty(key, ctx.options.probe_timeout + 10)
        async with _connections(ctx, [url], sockets) as opened:
            await wait_registered(key, sockets, ctx.options.timeout)
            if stranding and (why := await _bare_stranded(ctx)):
                return _unavailable(scenario, target, FANOUT_METRICS, why, NOT_POSSIBLE)
            sent = _sender(ctx, kind, messages)
            delivery = await client.collect(opened.connections, messages, sent, ctx.options.timeout, ctx.options.idle)
            return _fanout_records(scenario, target, delivery, opened, servers, delivery.why_missing())


async def broadcast(ctx: Context, target: str) -> list[Record]:
    """N sockets, M group messages sent from a separate process."""
    kind = "bare-group" if target == "bare" else "wsgroups-group"
    o = ctx.options
    return await _fanout(ctx, "group broadcast", target, o.broadcast_sockets, o.broadcast_messages, kind)


async def send_by_id(ctx: Context, target: str) -> list[Record]:
    """N sockets, M rounds of one send per stored address, from a separate process."""
    kind = "bare-ids" if target == "bare" else "wsgroups-ids"
    o = ctx.options
    return await _fanout(ctx, "send by ID", target, o.ids_sockets, o.ids_messages, kind)


TICK_METRICS = [
    "deliveries/s",
    "first-to-last delivery per tick (s)",
    "messages missing",
    "connections missing messages",
    "connections/s",
    "server RSS (MiB)",
]


async def _has_wsbroadcast(ctx: Context) -> bool:
    argv = [sys.executable, "manage.py", "help", "--commands"]
    return "wsbroadcast" in (await run_command(argv, ctx.env, 120)).split()


async def broadcaster_tick(ctx: Context, target: str) -> list[Record]:
    """N subscribed sockets over several server processes, one separate process per tick.

    wsgroups: ``manage.py wsbroadcast --once`` per tick; bare: one ``channel_layer.send``
    per stored channel name per tick (``bench.sender bare-ids``).
    """
    scenario, o = "broadcaster tick", ctx.options
    if target == "wsgroups" and not await _has_wsbroadcast(ctx):
        why = "manage.py has no wsbroadcast command"
        return _unavailable(scenario, target, TICK_METRICS, why)
    sockets, reduced = o.tick_sockets, ""
    usable = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_RESERVE
    if sockets > usable:
        sockets, reduced = usable, f" (reduced from {o.tick_sockets}: open-file limit)"
    async with fresh_servers(ctx, target, o.tick_servers) as servers:
        urls = [ws_url(server, PATHS[target]) for server in servers]
        async with _connections(ctx, urls, sockets) as opened:
            await wait_registered(ID_KEYS[target], sockets, o.timeout)
            if target == "bare" and (why := await _bare_stranded(ctx)):
                note = f"{sockets} sockets over {o.tick_servers} servers; {why}"
                return _unavailable(scenario, target, TICK_METRICS, note, NOT_POSSIBLE)
            tick: Callable[[], Awaitable[str]]
            if target == "wsgroups":
                await _sender(ctx, "wsgroups-subscribe", 1)
                argv = [sys.executable, "manage.py", "wsbroadcast", "--once"]
                tick = lambda: run_command(argv, ctx.env, o.timeout)  # noqa: E731
            else:
                tick = lambda: _sender(ctx, "bare-ids", 1)  # noqa: E731
            deliveries = [
                await client.collect(opened.connections, 1, tick(), o.timeout, o.idle) for _ in range(o.ticks)
            ]
            received = sum(d.received for d in deliveries)
            spans = sum(d.span for d in deliveries)
            values = [
                received / spans if spans > 0 else 0.0,
                spans / len(deliveries),
                sum(d.missing for d in deliveries),
                max(d.connections_missing for d in deliveries),
                opened.per_second,
                mib(sum(server.rss_kib() for server in servers)),
            ]
            note = f"{sockets} sockets over {o.tick_servers} servers, {o.ticks} ticks{reduced}"
            why = "; ".join(sorted({d.why_missing() for d in deliveries if d.why_missing()}))
            note += f"; {why}" if why else ""
            return [
                Record(scenario, target, metric, float(value), note=note)
                for metric, value in zip(TICK_METRICS, values, strict=True)
            ]


async def echo(ctx: Context, target: str) -> list[Record]:
    """C connections each send M text frames one at a time and await the echo."""
    o = ctx.options
    async with fresh_servers(ctx, target) as servers:
        async with _connections(ctx, [ws_url(servers[0], PLAIN_PATHS[target])], o.echo_connections) as opened:
            result = await client.echo(opened.connections, o.echo_messages, o.size, o.timeout)
        values = {
            "messages/s": result.per_second,
            "round trip p50 (ms)": result.percentile(50) * 1000,
            "round trip p99 (ms)": result.percentile(99) * 1000,
            "messages missing": o.echo_connections * o.echo_messages - len(result.rtts),
            "server RSS (MiB)": mib(servers[0].rss_kib()),
        }
        return [Record("echo", target, metric, float(value)) for metric, value in values.items()]


async def churn(ctx: Context, target: str) -> list[Record]:
    """Open and close N connections, K at a time; and the server's CPU time (all threads)
    per connection meanwhile: with client and server on one machine, a rate tells which of
    them ran out first, the CPU time what each handshake costs the server."""
    o = ctx.options
    async with fresh_servers(ctx, target) as servers:
        cpu_before = servers[0].cpu_seconds()
        result = await client.churn(ws_url(servers[0], PLAIN_PATHS[target]), o.churn_connections, o.churn_concurrency)
        cpu = servers[0].cpu_seconds() - cpu_before
        values = {
            "connections/s": result.per_second,
            "failed connections": result.failures,
            "server CPU per connection (ms)": 1000 * cpu / max(1, o.churn_connections),
            "server RSS (MiB)": mib(servers[0].rss_kib()),
        }
        return [
            Record("churn", target, metric, float(value), note=result.first_error) for metric, value in values.items()
        ]


async def memory(ctx: Context, target: str) -> list[Record]:
    """Server RSS growth per idle connection: (RSS with N open - RSS before) / N; and how
    fast the N opened (``--concurrency`` handshakes at a time)."""
    o = ctx.options
    async with fresh_servers(ctx, target) as servers:
        server, url, key = servers[0], ws_url(servers[0], PATHS[target]), ID_KEYS[target]
        async with _connections(ctx, [url], 20):
            pass
        await wait_registered_empty(key, 30)
        await asyncio.sleep(1.0)
        before = server.rss_kib()
        async with _connections(ctx, [url], o.memory_sockets) as opened:
            await wait_registered(key, o.memory_sockets, o.timeout)
            await asyncio.sleep(2.0)
            after = server.rss_kib()
        values = {
            "opening them, connections/s": opened.per_second,
            "RSS per idle connection (KiB)": (after - before) / o.memory_sockets,
            "server RSS before (MiB)": mib(before),
            "server RSS after (MiB)": mib(after),
        }
        return [Record("memory", target, metric, float(value)) for metric, value in values.items()]


async def _trigger(url: str, messages: int, size: int, timeout: float) -> str:
    conn: ClientConnection = await client.connect_one(url)
    try:
        await conn.send(f"{messages} {size}")
        return str(await asyncio.wait_for(conn.recv(), timeout))
    finally:
        await conn.close()


async def ceiling(ctx: Context, target: str) -> list[Record]:
    """The group-broadcast fan-out from the raw ``websockets`` server (no Django, no Redis)."""
    o = ctx.options
    server = ctx.processes.start_ceiling()
    with ctx.processes.running(server):
        async with _connections(ctx, [ws_url(server, "/")], o.broadcast_sockets) as opened:
            fire = _trigger(ws_url(server, "/trigger"), o.broadcast_messages, o.size, o.timeout)
            delivery = await client.collect(opened.connections, o.broadcast_messages, fire, o.timeout, o.idle)
            note = delivery.why_missing()
            return _fanout_records("ceiling", target, delivery, opened, [server], note)


Scenario = Callable[[Context, str], Awaitable[list[Record]]]

#: option name → (title in the table, scenario, targets it runs against)
SCENARIOS: dict[str, tuple[str, Scenario, tuple[str, ...]]] = {
    "echo": ("echo", echo, ("wsgroups", "bare")),
    "broadcast": ("group broadcast", broadcast, ("wsgroups", "bare")),
    "ids": ("send by ID", send_by_id, ("wsgroups", "bare")),
    "tick": ("broadcaster tick", broadcaster_tick, ("wsgroups", "bare")),
    "churn": ("churn", churn, ("wsgroups", "bare")),
    "memory": ("memory", memory, ("wsgroups", "bare")),
    "rooms": (ROOM_BROADCAST, room_broadcast, ("wsgroups", "bare")),
    "room-churn": (ROOM_CHURN, room_churn, ("wsgroups", "bare")),
    "ceiling": ("ceiling", ceiling, ("raw",)),
    "soak": ("soak", soak, ("wsgroups", "bare")),
    "storm": (STORM, storm, ("wsgroups", "bare")),
}
#: What ``python -m bench`` runs without ``--scenarios``: all but the long soak and the storm.
DEFAULT_SCENARIOS = tuple(name for name in SCENARIOS if name not in ("soak", "storm"))


async def run_scenario(ctx: Context, name: str, target: str) -> list[Record]:
    """Run one scenario against one target; an error becomes a record, not an exception."""
    title, scenario, _ = SCENARIOS[name]
    try:
        return await scenario(ctx, target)
    except Exception as exc:
        return [Record(title, target, "error", None, "error", f"{type(exc).__name__}: {exc}")]
