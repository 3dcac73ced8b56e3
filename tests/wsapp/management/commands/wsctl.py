"""Act on sockets from a separate process, as any Django code would; prints JSON."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from wsgroups import Group, Room, WebSocket
from wsgroups.exceptions import TransportError
from wsgroups.runtime import get_transport


class Command(BaseCommand):
    help = (
        "send / send-many / fanout / disconnect / is-dead / dead-map / broadcast / group-disconnect / sockets / "
        "registry / process-of / live-pids / subscribe / subscriptions, "
        "room-join / room-leave / room-rooms / room-broadcast / room-sockets / "
        "room-presence / room-disconnect / user-broadcast / user-session, from this process"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action")
        parser.add_argument("target")
        parser.add_argument("values", nargs="*")
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--repeat", type=int, default=1, help="repeat the text this many times")
        parser.add_argument("--exclude", type=int, action="append", default=[])
        parser.add_argument("--code", type=int, default=1000)
        parser.add_argument("--seconds", type=float, default=10.0, help="traffic: how long to keep sending")
        parser.add_argument("--interval", type=float, default=0.05, help="traffic: seconds between ticks")
        parser.add_argument("--then-signal", type=int, default=0, help="send: SIGTERM this PID once the sends left")

    def handle(self, *args: Any, **options: Any) -> None:
        action, target, rest = options["action"], options["target"], options["values"]
        started = time.monotonic()
        result: Any
        try:
            if action == "send":
                ws = WebSocket(int(target))
                text = rest[0] * options["repeat"]
                results = [ws.send(text.replace("{i}", str(i))) for i in range(options["count"])]
                result = all(results)
                if options["then_signal"]:
                    # The sends handed to the channel layer, their target's server gets
                    # SIGTERM at once: most of them still wait in its channel.
                    transport = get_transport()
                    if not transport.block_on(transport.drain(30), "drain"):
                        raise RuntimeError("the sends were not handed to the channel layer in time")
                    os.kill(options["then_signal"], signal.SIGTERM)
            elif action == "send-many":
                # --count rounds of one send to each of the IDs; {id} and {i} in the text
                # become the socket's ID and the round's number.
                ids = [int(part) for part in target.split(",")]
                result = sum(
                    WebSocket(i).send(rest[0].replace("{id}", str(i)).replace("{i}", str(k)))
                    for k in range(options["count"])
                    for i in ids
                )
            elif action == "fanout":
                # One sender process: --count broadcasts to the group, then --repeat sends by
                # ID to each of the IDs in values[0], then is_dead() of the last of them.
                ids = [int(part) for part in rest[0].split(",")]
                label = rest[1]
                counts = [Group(target).broadcast(f"b{label}-{k}") for k in range(options["count"])]
                taken = sum(WebSocket(i).send(f"d{label}") for _ in range(options["repeat"]) for i in ids)
                result = {"broadcast": counts, "taken": taken, "last_dead": WebSocket(ids[-1]).is_dead()}
            elif action == "traffic":
                result = _traffic(target.split(","), [int(part) for part in rest[0].split(",")], options)
            elif action == "disconnect":
                result = WebSocket(int(target)).disconnect(rest[0] if rest else None, options["code"])
            elif action == "is-dead":
                result = WebSocket(int(target)).is_dead()
            elif action == "dead-map":
                result = {part: WebSocket(int(part)).is_dead() for part in target.split(",")}
            elif action == "broadcast":
                result = Group(target).broadcast(rest[0], exclude=options["exclude"])
            elif action == "group-disconnect":
                result = Group(target).disconnect(rest[0] if rest else None, options["code"])
            elif action == "registry":
                from wsgroups.models import Connection

                row = Connection.objects.filter(pk=int(target)).values("state", "close_code", "close_reason").first()
                result = row
            elif action == "process-of":
                from wsgroups.models import Connection

                process = Connection.objects.select_related("process").get(pk=int(target)).process
                result = {"id": process.pk, "pid": process.pid, "stopped": process.stopped_at is not None}
            elif action == "live-pids":
                # pids of the live processes of a kind (server, worker, broadcaster).
                from wsgroups.cluster import live_cutoff
                from wsgroups.models import Process

                live = Process.objects.filter(kind=target, stopped_at__isnull=True, heartbeat_at__gte=live_cutoff())
                result = sorted(live.values_list("pid", flat=True))
            elif action == "registry-between":
                result = _registry_between(int(target), int(rest[0]))
            elif action == "registry-path":
                from wsgroups.models import Connection

                result = Connection.objects.filter(path=target).count()
            elif action == "sockets":
                result = sorted(ws.id for ws in Group(target).sockets())
            elif action == "subscribe":
                from wsgroups.models import BroadcastSubscription

                ids = [int(part) for part in target.split(",")]
                result = len(
                    BroadcastSubscription.objects.bulk_create([BroadcastSubscription(websocket_id=i) for i in ids])
                )
            elif action == "subscriptions":
                # The broadcaster's count of each of the IDs that still has a subscription.
                from wsgroups.models import BroadcastSubscription

                ids = [int(part) for part in target.split(",")]
                rows = BroadcastSubscription.objects.filter(websocket_id__in=ids)
                result = {str(i): n for i, n in rows.values_list("websocket_id", "num_broadcasted")}
            elif action.startswith(("room-", "user-")):
                result = _rooms(action, target, rest, options)
            else:
                raise ValueError(f"unknown action {action!r}")
        except TransportError as exc:
            result = {"error": "TransportError", "message": str(exc)}
        self.stdout.write(json.dumps({"result": result, "seconds": time.monotonic() - started}))


def _traffic(groups: list[str], ids: list[int], options: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Steady traffic for ``--seconds`` from two threads, a tick every ``--interval`` seconds
    in each: one sends by ID to every socket (text ``d<tick>:<id>``), the other broadcasts
    to every group (text ``b<tick>:<group>``); every message's text is unique at its socket.
    A broadcast waits for the other processes' counts, so it cannot hold up the sends.

    One record per tick: ``k``, ``at`` and ``done`` (wall clock when it began and ended),
    and for sends ``d`` (per ID, ``T`` when send() returned True, ``F`` for False, ``E``
    when it raised TransportError), for broadcasts ``b`` (per group, the count returned,
    or ``"E"`` for a TransportError).
    """
    from django.db import connection

    deadline = time.monotonic() + options["seconds"]

    def ticks(record_tick: Any) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        try:
            while time.monotonic() < deadline:
                began = time.monotonic()
                record: dict[str, Any] = {"k": len(records), "at": time.time()}
                record_tick(record)
                record["done"] = time.time()
                records.append(record)
                time.sleep(max(0.0, options["interval"] - (time.monotonic() - began)))
        finally:
            connection.close()
        return records

    def sends(record: dict[str, Any]) -> None:
        outcomes = []
        for socket_id in ids:
            try:
                outcomes.append("T" if WebSocket(socket_id).send(f"d{record['k']}:{socket_id}") else "F")
            except TransportError:
                outcomes.append("E")
        record["d"] = "".join(outcomes)

    def broadcasts(record: dict[str, Any]) -> None:
        counts: list[int | str] = []
        for group in groups:
            try:
                counts.append(Group(group).broadcast(f"b{record['k']}:{group}"))
            except TransportError:
                counts.append("E")
        record["b"] = counts

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = {name: pool.submit(ticks, job) for name, job in (("sends", sends), ("broadcasts", broadcasts))}
    return {name: future.result() for name, future in running.items()}


def _registry_between(low: int, high: int, timeout: float = 10) -> dict[str, Any]:
    """Registry rows with ``low < id < high``, counted once the row of socket ``high`` is written.

    The registry is written in batches, in opening order: a socket that opened before
    ``high`` has its row written no later than ``high``'s. ``high_written`` is False when
    that row did not appear within ``timeout`` seconds (the count is then not conclusive).
    """
    from wsgroups.models import Connection

    deadline = time.monotonic() + timeout
    while not (written := Connection.objects.filter(pk=high).exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = list(Connection.objects.filter(pk__gt=low, pk__lt=high).values_list("pk", "path"))
    return {"high_written": written, "rows": rows}


def _rooms(action: str, target: str, rest: list[str], options: dict[str, Any]) -> Any:
    """Room actions; ``target`` is a socket ID (join, leave, rooms), a user name (user-*) or a room."""
    if action == "room-join":
        # Several comma-separated IDs: {ID: joined} (the meta, if any, is given to each).
        meta = json.loads(rest[1]) if len(rest) > 1 else None
        if "," in target:
            return {part: WebSocket(int(part)).join(rest[0], meta=meta) for part in target.split(",")}
        return WebSocket(int(target)).join(rest[0], meta=meta)
    if action == "room-leave":
        return WebSocket(int(target)).leave(rest[0])
    if action == "room-rooms":
        return sorted(WebSocket(int(target)).rooms())
    if action == "room-broadcast":
        # --count broadcasts; {i} in the text becomes the broadcast's number.
        room = Room(target)
        counts = [
            room.broadcast(rest[0].replace("{i}", str(i)), exclude=options["exclude"]) for i in range(options["count"])
        ]
        return counts[0] if len(counts) == 1 else counts
    if action == "room-sockets":
        return sorted(ws.id for ws in Room(target).sockets())
    if action == "room-presence":
        return {str(socket_id): meta for socket_id, meta in sorted(Room(target).presence().items())}
    if action == "room-disconnect":
        return Room(target).disconnect(rest[0] if rest else None, options["code"])
    if action == "room-counts":
        from wsgroups.room import room_counts

        return room_counts()
    if action == "user-broadcast":
        from django.contrib.auth import get_user_model

        return Room.for_user(get_user_model().objects.get(username=target)).broadcast(rest[0])
    if action == "user-session":
        return _user_session(target)
    raise ValueError(f"unknown action {action!r}")


def _user_session(username: str) -> dict[str, Any]:
    """A logged-in session for user ``username`` (created if need be): its key and the user's pk."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    user, _ = get_user_model().objects.get_or_create(username=username)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return {"session_key": session.session_key, "pk": user.pk}
