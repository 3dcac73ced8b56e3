"""The cluster's database work: processes (registration, heartbeats, who holds which ID
block, recovery of the sockets of a process that died) and the socket registry's writes.

Liveness lives in the database (``Process.heartbeat_at``), so every process — servers,
workers, the broadcaster, a shell — sees the same picture. Reads are cached briefly so
that sends never query the database per message: an ID block's owner never changes, and
the list of live processes is refreshed at most once per ``DIRECTORY_TTL``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar

from django.db import close_old_connections, transaction
from django.utils import timezone

from .bulk_insert import insert_ignoring_conflicts
from .codes import Closing, close_for
from .conf import conf
from .models import Connection, IdBlock, Process

__all__ = [
    "Directory",
    "ProcessInfo",
    "ReapedSocket",
    "allocate_block",
    "heartbeat",
    "in_thread",
    "live_cutoff",
    "prune_closed_connections",
    "reap_dead_processes",
    "reaped_socket_ids",
    "register_process",
    "stop_process",
    "write_registry",
]

logger = logging.getLogger("wsgroups.cluster")

T = TypeVar("T")
P = ParamSpec("P")

#: Seconds the list of live processes is reused before it is read again.
DIRECTORY_TTL = 1.0


@dataclass(frozen=True)
class ProcessInfo:
    id: int
    channel_name: str
    kind: str


class ReapedSocket(NamedTuple):
    """A socket of a dead process, as the registry last recorded it."""

    id: int
    group: str
    session_key: str
    #: The rooms it was in (those its process wrote with its last registry batch).
    rooms: list[str]


def in_thread(func: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """``func`` run in a thread of the loop's default executor (with the caller's context
    variables), Django's stale connections closed around it. No user code runs there, so
    asgiref's ``sync_to_async`` (which lets such code call back into the loop) is not
    needed: a plain executor call costs a fraction of it, once or twice per handshake."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        work = functools.partial(contextvars.copy_context().run, run, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, work)

    return call


def live_cutoff() -> datetime:
    """Processes with an older heartbeat are dead."""
    return timezone.now() - timedelta(seconds=conf.PROCESS_TIMEOUT)


def register_process(kind: str, channel_name: str) -> int:
    now = timezone.now()
    process = Process.objects.create(
        hostname=socket.gethostname(), pid=os.getpid(), kind=kind, channel_name=channel_name, heartbeat_at=now
    )
    return int(process.pk)


def allocate_block(process_id: int) -> int:
    return int(IdBlock.objects.create(process_id=process_id).pk)


def heartbeat(
    process_id: int,
    messages_in_per_s: float = 0.0,
    messages_out_per_s: float = 0.0,
    limit_events: dict[str, int] | None = None,
    metrics: dict[str, Any] | None = None,
) -> bool:
    """Refresh this process's heartbeat, message rates, limit counts and monitoring
    counters (:func:`wsgroups.metrics.snapshot`); False if another process already
    declared it dead."""
    fields: dict[str, Any] = {
        "heartbeat_at": timezone.now(),
        "messages_in_per_s": messages_in_per_s,
        "messages_out_per_s": messages_out_per_s,
    }
    if limit_events is not None:
        fields["limit_events"] = limit_events
    if metrics is not None:
        fields["metrics"] = metrics
    updated = Process.objects.filter(pk=process_id, stopped_at__isnull=True).update(**fields)
    return bool(updated)


def stop_process(process_id: int) -> None:
    Process.objects.filter(pk=process_id, stopped_at__isnull=True).update(stopped_at=timezone.now())


def reap_dead_processes(reaper_id: int) -> list[ReapedSocket]:
    """Mark processes without a recent heartbeat stopped and their open sockets closed.

    Each dead process is claimed by exactly one reaper (a conditional UPDATE); the
    claimer gets back every socket that process held (with the rooms it was in), to run
    their disconnect handlers.
    """
    now = timezone.now()
    dead = list(
        Process.objects.filter(stopped_at__isnull=True, heartbeat_at__lt=live_cutoff())
        .exclude(pk=reaper_id)
        .values_list("pk", flat=True)
    )
    reaped: list[ReapedSocket] = []
    for process_id in dead:
        with transaction.atomic():
            if not Process.objects.filter(pk=process_id, stopped_at__isnull=True).update(stopped_at=now):
                continue
            rows = list(
                Connection.objects.live()
                .filter(process_id=process_id)
                .values_list("pk", "group", "session_key", "recorded_rooms")
            )
            code, reason = close_for(Closing.PROCESS_DIED)
            Connection.objects.filter(pk__in=[row[0] for row in rows]).update(
                state=Connection.State.CLOSED, closed_at=now, close_code=code, close_reason=reason
            )
        logger.warning("wsgroups: process #%s stopped sending heartbeats; %d sockets reaped", process_id, len(rows))
        reaped.extend(
            ReapedSocket(int(pk), str(group), str(session_key), [str(room) for room in rooms or ()])
            for pk, group, session_key, rooms in rows
        )
    return reaped


def reaped_socket_ids(process_id: int) -> set[int]:
    """IDs of the sockets of ``process_id`` that a reaper closed (and ran the handlers of)."""
    code, reason = close_for(Closing.PROCESS_DIED)
    rows = Connection.objects.filter(process_id=process_id, close_code=code, close_reason=reason)
    return set(rows.values_list("pk", flat=True))


def prune_closed_connections() -> int:
    """Delete registry rows of sockets closed longer than ``REGISTRY_RETENTION`` seconds ago."""
    cutoff = timezone.now() - timedelta(seconds=conf.REGISTRY_RETENTION)
    deleted, _ = Connection.objects.filter(state=Connection.State.CLOSED, closed_at__lt=cutoff).delete()
    return int(deleted)


class Directory:
    """Cached answers to "which process holds block B" and "which processes are alive"."""

    def __init__(self) -> None:
        self._blocks: dict[int, ProcessInfo | None] = {}
        self._live: dict[int, ProcessInfo] = {}
        self._live_read_at = 0.0

    async def live(self) -> dict[int, ProcessInfo]:
        if time.monotonic() - self._live_read_at > DIRECTORY_TTL:
            self._live = await in_thread(self._read_live)()
            self._live_read_at = time.monotonic()
        return self._live

    async def live_servers(self) -> list[ProcessInfo]:
        return [info for info in (await self.live()).values() if info.kind == "server" and info.channel_name]

    def forget_live(self) -> None:
        self._live_read_at = 0.0

    async def owner(self, block: int) -> ProcessInfo | None:
        """The process that holds sockets of ``block``, whether or not it is alive."""
        if block not in self._blocks:
            self._blocks[block] = await in_thread(self._read_block)(block)
        return self._blocks[block]

    async def channel_for_block(self, block: int) -> str | None:
        """The channel of the live process that holds ``block``; None if it is gone."""
        owner = await self.owner(block)
        if owner is None:
            return None
        live = await self.live()
        if owner.id not in live and time.monotonic() - self._live_read_at > 0.2:
            # A process that started after the last read is alive too: read again soon.
            self.forget_live()
            live = await self.live()
        return owner.channel_name if owner.id in live else None

    def cached_verdict(self, block: int) -> bool | None:
        """From the cache alone: True if ``block``'s sockets are surely dead, False if its owner
        looked alive at a recent read, None if that is not known (look it up, then ask again)."""
        if block not in self._blocks:
            return None
        owner = self._blocks[block]
        if owner is None:
            return True  # no process ever held this block
        if time.monotonic() - self._live_read_at > DIRECTORY_TTL:
            return None
        return owner.id not in self._live

    @staticmethod
    def _read_live() -> dict[int, ProcessInfo]:
        rows = Process.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=live_cutoff()).values_list(
            "pk", "channel_name", "kind"
        )
        return {pk: ProcessInfo(pk, channel, kind) for pk, channel, kind in rows}

    @staticmethod
    def _read_block(block: int) -> ProcessInfo | None:
        row = (
            IdBlock.objects.filter(pk=block).values_list("process_id", "process__channel_name", "process__kind").first()
        )
        return ProcessInfo(row[0], row[1], row[2]) if row else None


class RegistryEntry(Protocol):
    """What the registry records of a socket (a :class:`~wsgroups.outbox.LocalSocket`)."""

    id: int
    group: str
    path: str
    opened_at: datetime | None
    session_key: str | None
    user_id: Any
    remote_addr: str
    subprotocol: str | None
    close_code: int | None
    close_reason: str


def write_registry(
    process_id: int,
    opened: Sequence[RegistryEntry],
    closed: Sequence[RegistryEntry],
    rooms: Mapping[int, Sequence[str]] | None = None,
) -> None:
    """Record sockets opened and closed, and the rooms of sockets whose rooms changed
    (``{socket ID: rooms}``), since the last write, in one transaction.

    New sockets are inserted in bulk (those that also closed meanwhile, as closed; with
    their rooms); closes share a few (code, reason) pairs, so they are one UPDATE per
    pair; room lists too are one UPDATE per distinct list (sockets joining one room
    share it).
    """
    rooms = rooms or {}
    with transaction.atomic():
        closed_ids = {sock.id for sock in closed}
        now = timezone.now()
        rows = []
        for sock in opened:
            row = Connection(
                id=sock.id,
                group=sock.group,
                path=sock.path[:2048],
                state=Connection.State.OPEN,
                opened_at=sock.opened_at or now,
                session_key=sock.session_key or "",
                user_id=sock.user_id,
                remote_addr=sock.remote_addr,
                subprotocol=sock.subprotocol or "",
                process_id=process_id,
                recorded_rooms=list(rooms.get(sock.id, ())),
            )
            if sock.id in closed_ids:
                row.state, row.closed_at = Connection.State.CLOSED, now
                row.close_code, row.close_reason = sock.close_code, sock.close_reason[:255]
            rows.append(row)
        if rows:
            insert_ignoring_conflicts(Connection, rows)
        opened_ids = {sock.id for sock in opened}
        by_rooms: dict[tuple[str, ...], list[int]] = {}
        for socket_id, names in rooms.items():
            if socket_id not in opened_ids and socket_id not in closed_ids:
                by_rooms.setdefault(tuple(names), []).append(socket_id)
        for names, ids in by_rooms.items():
            for start in range(0, len(ids), 500):
                Connection.objects.filter(pk__in=ids[start : start + 500], state=Connection.State.OPEN).update(
                    recorded_rooms=list(names)
                )
        by_outcome: dict[tuple[int | None, str], list[int]] = {}
        for sock in closed:
            if sock.id not in opened_ids:
                by_outcome.setdefault((sock.close_code, sock.close_reason[:255]), []).append(sock.id)
        for (code, reason), ids in by_outcome.items():
            for start in range(0, len(ids), 500):
                # The first close wins: a row a reaper closed keeps its verdict.
                Connection.objects.filter(pk__in=ids[start : start + 500], state=Connection.State.OPEN).update(
                    state=Connection.State.CLOSED, closed_at=now, close_code=code, close_reason=reason
                )
