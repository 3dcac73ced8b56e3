"""The separate sending process: ``python -m bench.sender KIND --messages M --size S``.

Kinds:

- ``bare-group``: ``channel_layer.group_send("bench", ...)`` M times;
- ``bare-ids``: M rounds of ``channel_layer.send(name, ...)`` to every channel name in
  :data:`bench.registry.BARE_KEY`, one by one (retrying while a channel is full);
- ``bare-shards``: sends nothing; ``unreachable`` counts the stored channel names that
  ``channel_layer.send`` writes to another Redis shard than the one their consumer reads
  (channels_redis 4.3 hashes the whole name to send, the part up to ``!`` to receive;
  always 0 with one Redis), ``shards`` is the layer's shard count;
- ``wsgroups-group``: ``Group("bench").broadcast(...)`` M times;
- ``wsgroups-ids``: M rounds of ``WebSocket(id).send(...)`` to every ID in
  :data:`bench.registry.WSGROUPS_KEY`;
- ``wsgroups-subscribe``: a ``BroadcastSubscription`` row for every stored ID;
- ``wsgroups-room``: ``Room("bench").broadcast(...)`` M times (the sockets joined it in
  their upgrade view);
- ``wsgroups-room-churn`` / ``bare-room-churn``: M rounds in which every stored socket
  joins the room ``churn`` and then leaves it (``ws.ajoin`` / ``ws.aleave``, or
  ``channel_layer.group_add`` / ``group_discard`` of every stored channel name), up to
  :data:`CHURN_CONCURRENCY` at once; then every socket joins once more and one message
  goes to the room (``Room.broadcast`` / ``group_send``). Adds ``joins``, ``leaves``,
  ``refused`` (joins or leaves that returned False) and ``churn_seconds`` (the rounds);
- ``soak-group``: for ``--duration`` seconds, one ``Group("bench").broadcast`` every
  ``--interval`` seconds, text ``g <seq>``;
- ``soak-ids``: for ``--duration`` seconds, every ``--interval`` seconds a round of
  ``WebSocket(id).send`` to every ID stored at that moment, text ``i <round> <id>``.

The soak kinds write one JSON line per call (broadcast) or round (IDs) to ``--log``:
``seq``, ``t0`` and ``t1`` (``time.monotonic()`` before and after, comparable with the
client's clock on the same machine), ``accepted``, and for rounds the ``ids`` addressed;
they add what was accepted to the Redis counter :data:`SOAK_SENT_KEY` as they go.

Message ``seq`` is ``<seq:06d>`` padded with ``x`` to ``--size`` characters. It prints one
JSON object: ``targets`` (sockets addressed), ``sent`` (calls made), ``accepted`` (what the
calls reported as taken: for wsgroups their return values), ``retries`` (ChannelFull
retries) and ``seconds`` (time spent sending).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.messages import GROUP, message, soak_message
from bench.registry import BARE_KEY, WSGROUPS_KEY, sync_client

SOAK_KINDS = ("soak-group", "soak-ids")
KINDS = (
    "bare-group",
    "bare-ids",
    "bare-shards",
    "bare-room-churn",
    "wsgroups-group",
    "wsgroups-ids",
    "wsgroups-subscribe",
    "wsgroups-room",
    "wsgroups-room-churn",
    *SOAK_KINDS,
)
#: The room the churn kinds join and leave, and how many joins or leaves run at once.
CHURN_ROOM = "churn"
CHURN_CONCURRENCY = 50  # the bare side's redis-py pool holds 100 connections
#: Redis counter of the messages the soak senders have had accepted so far.
SOAK_SENT_KEY = "bench:soak:sent"


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()


def _stored(key: str) -> list[str]:
    return sorted(member.decode() for member in sync_client().smembers(key))


async def _bare(kind: str, messages: int, size: int, deadline: float) -> dict[str, Any]:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    try:
        return await _bare_sends(layer, kind, messages, size, deadline)
    finally:
        await layer.close_pools()


async def _bare_sends(layer: Any, kind: str, messages: int, size: int, deadline: float) -> dict[str, Any]:
    from channels.exceptions import ChannelFull

    result: dict[str, Any] = {"targets": 0, "sent": 0, "accepted": 0, "retries": 0}
    if kind == "bare-shards":
        names = _stored(BARE_KEY)
        result["targets"] = len(names)
        result["shards"] = int(getattr(layer, "ring_size", 1))
        result["unreachable"] = sum(
            layer.consistent_hash(name) != layer.consistent_hash(layer.non_local_name(name)) for name in names
        )
        return result
    if kind == "bare-room-churn":
        names = _stored(BARE_KEY)

        async def bare_join(name: str) -> bool:
            await layer.group_add(CHURN_ROOM, name)
            return True

        async def bare_leave(name: str) -> bool:
            await layer.group_discard(CHURN_ROOM, name)
            return True

        result |= await _churn(names, messages, bare_join, bare_leave)
        await layer.group_send(CHURN_ROOM, {"type": "bench.message", "text": message(0, size)})
        result["sent"] = result["accepted"] = 1
        return result
    if kind == "bare-group":
        for seq in range(messages):
            await layer.group_send(GROUP, {"type": "bench.message", "text": message(seq, size)})
            result["sent"] += 1
        result["accepted"] = result["sent"]
        return result
    names = _stored(BARE_KEY)
    result["targets"] = len(names)
    for seq in range(messages):
        event = {"type": "bench.message", "text": message(seq, size)}
        for name in names:
            pause = 0.001
            while True:
                try:
                    await layer.send(name, event)
                    break
                except ChannelFull:
                    if time.monotonic() > deadline:
                        raise
                    result["retries"] += 1
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.05)
            result["sent"] += 1
    result["accepted"] = result["sent"]
    return result


async def _churn(
    targets: list[Any], rounds: int, join: Callable[[Any], Awaitable[bool]], leave: Callable[[Any], Awaitable[bool]]
) -> dict[str, Any]:
    """``rounds`` of join-all then leave-all, then join-all once more; counts and timing."""
    counts = {"targets": len(targets), "joins": 0, "leaves": 0, "refused": 0}

    async def each(act: Callable[[Any], Awaitable[bool]], name: str) -> None:
        for start in range(0, len(targets), CHURN_CONCURRENCY):
            done = await asyncio.gather(*(act(target) for target in targets[start : start + CHURN_CONCURRENCY]))
            counts[name] += len(done)
            counts["refused"] += done.count(False)

    started = time.monotonic()
    for _ in range(rounds):
        await each(join, "joins")
        await each(leave, "leaves")
    churn_seconds = time.monotonic() - started
    await each(join, "joins")
    return {**counts, "churn_seconds": churn_seconds}


def _wsgroups(kind: str, messages: int, size: int) -> dict[str, Any]:
    from wsgroups import Group, Room, WebSocket  # needs django.setup() (_setup) first

    result: dict[str, Any] = {"targets": 0, "sent": 0, "accepted": 0, "retries": 0}
    if kind in ("wsgroups-group", "wsgroups-room"):
        fanout = Group(GROUP) if kind == "wsgroups-group" else Room(GROUP)
        for seq in range(messages):
            result["accepted"] += fanout.broadcast(message(seq, size))
            result["sent"] += 1
        return result
    if kind == "wsgroups-room-churn":
        churners = [WebSocket(int(member)) for member in _stored(WSGROUPS_KEY)]

        async def churn() -> dict[str, Any]:
            return await _churn(churners, messages, lambda ws: ws.ajoin(CHURN_ROOM), lambda ws: ws.aleave(CHURN_ROOM))

        result |= asyncio.run(churn())
        result["accepted"] = Room(CHURN_ROOM).broadcast(message(0, size))
        result["sent"] = 1
        return result
    sockets = [WebSocket(int(member)) for member in _stored(WSGROUPS_KEY)]
    result["targets"] = len(sockets)
    if kind == "wsgroups-subscribe":
        from wsgroups.models import BroadcastSubscription  # type: ignore[attr-defined]

        BroadcastSubscription.objects.bulk_create(
            [BroadcastSubscription(websocket_id=ws.id) for ws in sockets], ignore_conflicts=True
        )
        result["accepted"] = len(sockets)
        return result
    for seq in range(messages):
        text = message(seq, size)
        for ws in sockets:
            result["accepted"] += bool(ws.send(text))
            result["sent"] += 1
    return result


def _soak(kind: str, duration: float, interval: float, size: int, log_path: str) -> dict[str, Any]:
    """Send for ``duration`` seconds, one call or round every ``interval`` seconds (at most
    ``duration / interval + 1`` of them); log each one as it completes."""
    from wsgroups import Group, WebSocket  # needs django.setup() (_setup) first

    redis = sync_client()
    result: dict[str, Any] = {"targets": 0, "sent": 0, "accepted": 0, "retries": 0, "calls": 0}
    started = time.monotonic()
    end = started + duration
    with open(log_path, "w") as log:
        for seq in range(int(duration / interval) + 1):
            due = started + seq * interval
            if due >= end:
                break
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            entry: dict[str, Any] = {"seq": seq, "t0": time.monotonic()}
            if kind == "soak-group":
                accepted = Group(GROUP).broadcast(soak_message("g", seq, size))
                result["sent"] += 1
            else:
                ids = [int(member) for member in redis.smembers(WSGROUPS_KEY)]
                accepted = sum(bool(WebSocket(i).send(soak_message("i", seq, size, i))) for i in ids)
                result["sent"] += len(ids)
                result["targets"] = max(result["targets"], len(ids))
                entry["ids"] = ids
            entry["t1"] = time.monotonic()
            entry["accepted"] = accepted
            result["accepted"] += accepted
            result["calls"] += 1
            redis.incrby(SOAK_SENT_KEY, accepted)
            log.write(json.dumps(entry) + "\n")
            log.flush()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sender", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--messages", type=int, default=1)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up retrying after this")
    parser.add_argument("--duration", type=float, default=10.0, help="soak kinds: seconds to keep sending")
    parser.add_argument("--interval", type=float, default=1.0, help="soak kinds: seconds between calls")
    parser.add_argument("--log", default=os.devnull, help="soak kinds: JSON lines log of every call")
    args = parser.parse_args(argv)
    _setup()
    started = time.monotonic()
    if args.kind in SOAK_KINDS:
        result = _soak(args.kind, args.duration, args.interval, args.size, args.log)
    elif args.kind.startswith("bare-"):
        deadline = started + args.timeout
        result = asyncio.run(_bare(args.kind, args.messages, args.size, deadline))
    else:
        result = _wsgroups(args.kind, args.messages, args.size)
    result["seconds"] = time.monotonic() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
