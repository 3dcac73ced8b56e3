"""The room scenarios: a room broadcast beside a group broadcast on the same sockets, and a
churn of joins and leaves, against stock Channels' groups (``group_send``,
``group_add`` / ``group_discard``), each over several server processes.

``room broadcast``: N sockets spread over ``--room-servers`` processes, each in group
``bench`` and (wsgroups) in room ``bench``, joined in its upgrade view. A separate process
sends M messages with ``Room("bench").broadcast``, then M with ``Group("bench").broadcast``
to the same sockets, ``--room-rounds`` times in alternation; the bare consumer gets M
``group_send`` per round. Each side reports its median round; wsgroups adds the ratio
room ÷ group of deliveries/s, the same sockets measured in the same run.

``room churn``: N sockets over the same processes; a separate process makes every socket
join room ``churn`` and leave it again, ``--room-churn-rounds`` times (joins and leaves
per second), then join once more and sends one message to the room, which every socket
must get (nothing lost, no member left out).
"""

from __future__ import annotations

import json

from bench import client
from bench.fanout import connections, fanout_records, sender
from bench.harness import ID_KEYS, PATHS, Context, Record, fresh_servers, mib, wait_registered, ws_url
from bench.messages import GROUP

__all__ = ["ROOM_BROADCAST", "ROOM_CHURN", "room_broadcast", "room_churn"]

ROOM_BROADCAST = "room broadcast"
GROUP_BESIDE = "group broadcast, same sockets"
ROOM_CHURN = "room churn"
CHURN_METRICS = [
    "joins+leaves/s",
    "members after the churn",
    "messages missing",
    "connections missing messages",
    "refused joins or leaves",
    "sender time (s)",
    "server RSS (MiB)",
]


def _rate(delivery: client.Delivery) -> float:
    return delivery.received / delivery.span if delivery.span > 0 else 0.0


def _median(deliveries: list[client.Delivery]) -> client.Delivery:
    """The round with the median deliveries/s (the lower middle of an even count)."""
    ranked = sorted(deliveries, key=_rate)
    return ranked[(len(ranked) - 1) // 2]


async def room_broadcast(ctx: Context, target: str) -> list[Record]:
    """Room and group broadcasts on the same sockets (wsgroups), ``group_send`` (bare)."""
    o = ctx.options
    path = PATHS[target] + (f"?room={GROUP}" if target == "wsgroups" else "")
    kinds = {ROOM_BROADCAST: "wsgroups-room", GROUP_BESIDE: "wsgroups-group"}
    if target == "bare":
        kinds = {ROOM_BROADCAST: "bare-group"}
    async with fresh_servers(ctx, target, o.room_servers) as servers:
        urls = [ws_url(server, path) for server in servers]
        async with connections(ctx, urls, o.room_sockets) as opened:
            await wait_registered(ID_KEYS[target], o.room_sockets, o.timeout)
            rounds: dict[str, list[client.Delivery]] = {title: [] for title in kinds}
            for _ in range(o.room_rounds):
                for title, kind in kinds.items():
                    sent = sender(ctx, kind, o.room_messages)
                    rounds[title].append(
                        await client.collect(opened.connections, o.room_messages, sent, o.timeout, o.idle)
                    )
            layout = f"{o.room_sockets} sockets over {o.room_servers} servers, median of {o.room_rounds} rounds"
            records: list[Record] = []
            for title, deliveries in rounds.items():
                median = _median(deliveries)
                lost = sum(d.missing for d in deliveries)
                note = f"{layout}; {lost} messages missing over all rounds"
                if why := "; ".join(sorted({d.why_missing() for d in deliveries if d.why_missing()})):
                    note += f"; {why}"
                found = fanout_records(title, target, median, opened, servers, note)
                if target == "bare":  # one group_send run stands beside both wsgroups rows
                    found += [Record(GROUP_BESIDE, target, r.metric, r.value, note=r.note) for r in found]
                records += found
            if target == "wsgroups":
                ratios = [
                    _rate(room) / _rate(group) for room, group in zip(*rounds.values(), strict=True) if _rate(group)
                ]
                value = _rate(_median(rounds[ROOM_BROADCAST])) / max(_rate(_median(rounds[GROUP_BESIDE])), 1e-9)
                note = "per round: " + ", ".join(f"{ratio:.2f}" for ratio in ratios)
                records.append(Record(ROOM_BROADCAST, target, "deliveries/s ÷ group broadcast", value, note=note))
            return records


async def room_churn(ctx: Context, target: str) -> list[Record]:
    """Every socket joins and leaves a room R times from a separate process; then one broadcast."""
    o = ctx.options
    kind = "bare-room-churn" if target == "bare" else "wsgroups-room-churn"
    async with fresh_servers(ctx, target, o.room_servers) as servers:
        urls = [ws_url(server, PATHS[target]) for server in servers]
        async with connections(ctx, urls, o.room_churn_sockets) as opened:
            await wait_registered(ID_KEYS[target], o.room_churn_sockets, o.timeout)
            sent = sender(ctx, kind, o.room_churn_rounds)
            delivery = await client.collect(opened.connections, 1, sent, o.timeout, o.idle)
            summary = json.loads(str(delivery.trigger_result))
            changes = summary["joins"] + summary["leaves"] - summary["targets"]  # the final join is not timed
            values = [
                changes / summary["churn_seconds"] if summary["churn_seconds"] > 0 else 0.0,
                summary["accepted"],
                delivery.missing,
                delivery.connections_missing,
                summary["refused"],
                summary["seconds"],
                mib(sum(server.rss_kib() for server in servers)),
            ]
            note = f"{o.room_churn_sockets} sockets over {o.room_servers} servers, {o.room_churn_rounds} rounds"
            if target == "bare":
                note += "; members after: group_send reports no count, so the bare side has none"
                values[1] = None
            note += f"; {why}" if (why := delivery.why_missing()) else ""
            return [
                Record(ROOM_CHURN, target, metric, float(value), note=note)
                for metric, value in zip(CHURN_METRICS, values, strict=True)
                if value is not None
            ]
