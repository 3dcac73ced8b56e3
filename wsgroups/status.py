"""The state of the cluster as the database records it: live processes (heartbeat age,
messages in and out per second, refusals by the limits), open sockets per group and per
process — and, asked of the live server processes themselves, the rooms with their
member counts (rooms live in the processes' memory, not in the database).

Used by ``manage.py wsstatus`` and the admin's summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from .conf import conf
from .exceptions import TransportError
from .models import Connection, Process
from .room import room_counts

__all__ = [
    "ClusterStatus",
    "ProcessStatus",
    "collect_status",
    "format_limit_events",
    "format_status",
    "is_live",
    "with_rooms",
]


def is_live(process: Process, now: datetime) -> bool:
    """The cluster's liveness rule: not stopped, and a heartbeat within ``PROCESS_TIMEOUT`` of ``now``."""
    return (
        process.stopped_at is None
        and process.heartbeat_at is not None
        and process.heartbeat_at >= now - timedelta(seconds=conf.PROCESS_TIMEOUT)
    )


@dataclass(frozen=True)
class ProcessStatus:
    id: int
    kind: str
    hostname: str
    pid: int
    #: Seconds since the last heartbeat; None if the process never sent one.
    heartbeat_age: float | None
    live: bool
    #: Sockets the registry lists as open in this process.
    sockets: int
    #: Frames received from and sent to clients per second, over the last heartbeat interval.
    messages_in_per_s: float = 0.0
    messages_out_per_s: float = 0.0
    #: Refusals and closes by the limits since the process started, by reason.
    limit_events: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterStatus:
    #: Live processes, then dead ones whose open sockets have not been reaped yet.
    processes: list[ProcessStatus]
    #: Open sockets per group, by group name.
    groups: dict[str, int]
    #: All open sockets.
    sockets: int
    #: Frames per second, summed over the live processes.
    messages_in_per_s: float = 0.0
    messages_out_per_s: float = 0.0
    #: Live members per room name, cluster-wide (None: not asked, or no answer).
    rooms: dict[str, int] | None = None
    #: Why ``rooms`` is None when they were asked for.
    rooms_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_status(now: datetime | None = None) -> ClusterStatus:
    """Read the cluster's state from the database (three queries), judged at ``now`` (default: now)."""
    now = now or timezone.now()
    live_rows = Connection.objects.live().order_by()
    per_process = dict(live_rows.values_list("process_id").annotate(count=Count("pk")))
    per_group = dict(live_rows.values_list("group").annotate(count=Count("pk")))
    cutoff = now - timedelta(seconds=conf.PROCESS_TIMEOUT)
    processes = Process.objects.filter(
        Q(stopped_at__isnull=True, heartbeat_at__gte=cutoff) | Q(pk__in=list(per_process))
    ).order_by("pk")
    statuses = [
        ProcessStatus(
            id=process.pk,
            kind=process.kind,
            hostname=process.hostname,
            pid=process.pid,
            heartbeat_age=(now - process.heartbeat_at).total_seconds() if process.heartbeat_at else None,
            live=is_live(process, now),
            sockets=per_process.get(process.pk, 0),
            messages_in_per_s=process.messages_in_per_s,
            messages_out_per_s=process.messages_out_per_s,
            limit_events=dict(process.limit_events or {}),
        )
        for process in processes
    ]
    statuses.sort(key=lambda status: not status.live)
    return ClusterStatus(
        processes=statuses,
        groups={group: per_group[group] for group in sorted(per_group)},
        sockets=sum(per_group.values()),
        messages_in_per_s=sum(p.messages_in_per_s for p in statuses if p.live),
        messages_out_per_s=sum(p.messages_out_per_s for p in statuses if p.live),
    )


def with_rooms(status: ClusterStatus, now: datetime | None = None) -> ClusterStatus:
    """``status`` with the rooms' member counts, asked of every live server process."""
    cutoff = (now or timezone.now()) - timedelta(seconds=conf.PROCESS_TIMEOUT)
    channels = Process.objects.filter(kind="server", stopped_at__isnull=True, heartbeat_at__gte=cutoff).exclude(
        channel_name=""
    )
    try:
        return replace(status, rooms=room_counts(channels.values_list("channel_name", flat=True)))
    except TransportError as exc:
        return replace(status, rooms_error=f"unknown: {exc}")


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s ago"


def _table(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def format_limit_events(events: dict[str, int]) -> str:
    """``{"rate_limited": 2}`` as ``limits: 2 rate_limited``; empty when nothing was refused."""
    parts = [f"{count} {name}" for name, count in sorted(events.items()) if count]
    return f"limits: {', '.join(parts)}" if parts else ""


def format_status(status: ClusterStatus) -> str:
    """``status`` as aligned plain text: processes with heartbeat age, then sockets per group."""
    live = sum(1 for process in status.processes if process.live)
    lines = [f"Processes: {live} live"]
    lines += _table(
        [
            [
                f"#{process.id}",
                process.kind,
                f"{process.hostname}:{process.pid}",
                f"heartbeat {_age(process.heartbeat_age)}",
                f"{process.sockets} open socket{'' if process.sockets == 1 else 's'}",
                f"{process.messages_in_per_s:.0f} in/s, {process.messages_out_per_s:.0f} out/s",
                "  ".join(
                    part
                    for part in (
                        format_limit_events(process.limit_events),
                        "" if process.live else "DEAD (sockets not reaped yet)",
                    )
                    if part
                ),
            ]
            for process in status.processes
        ]
    )
    lines.append(f"Messages: {status.messages_in_per_s:.0f} in/s, {status.messages_out_per_s:.0f} out/s")
    lines.append(f"Sockets: {status.sockets} open")
    lines += _table([[group, str(count)] for group, count in status.groups.items()])
    if status.rooms is not None:
        lines.append(f"Rooms: {len(status.rooms)}")
        lines += _table([[room, str(count)] for room, count in status.rooms.items()])
    elif status.rooms_error:
        lines.append(f"Rooms: {status.rooms_error}")
    return "\n".join(lines)
