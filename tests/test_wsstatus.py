"""``manage.py wsstatus``: live processes with heartbeat age, open sockets per group and per process."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from wsgroups.exceptions import TransportError
from wsgroups.models import Connection, Process
from wsgroups.status import ClusterStatus, ProcessStatus, collect_status, format_status


def wsstatus(*args: str) -> str:
    out = StringIO()
    call_command("wsstatus", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def cluster(db: None) -> dict[str, Process]:
    """Two live servers, a worker, a crashed server still holding an open socket, a stopped one."""
    now = timezone.now()
    processes = {
        "web1": Process.objects.create(hostname="web1", pid=101, heartbeat_at=now - timedelta(seconds=1)),
        "web2": Process.objects.create(hostname="web2", pid=202, heartbeat_at=now - timedelta(seconds=2)),
        "worker": Process.objects.create(hostname="web1", pid=303, kind="worker", heartbeat_at=now),
        "crashed": Process.objects.create(hostname="web3", pid=404, heartbeat_at=now - timedelta(minutes=2)),
        "stopped": Process.objects.create(hostname="web4", pid=505, heartbeat_at=now, stopped_at=now),
    }
    rows = [
        (1, "chat", "web1", "open"),
        (2, "chat", "web1", "open"),
        (3, "chat", "web2", "open"),
        (4, "echo", "web2", "open"),
        (5, "echo", "crashed", "open"),
        (6, "echo", "web1", "closed"),
        (7, "gone", "stopped", "closed"),
    ]
    Connection.objects.bulk_create(
        Connection(id=socket_id, group=group, process=processes[name], state=state, opened_at=now)
        for socket_id, group, name, state in rows
    )
    return processes


def test_json_lists_live_processes_then_unreaped_dead_ones(cluster: dict[str, Process]) -> None:
    status = json.loads(wsstatus("--json"))
    assert status["sockets"] == 5
    assert status["groups"] == {"chat": 3, "echo": 2}
    summary = [(p["id"], p["kind"], p["hostname"], p["pid"], p["live"], p["sockets"]) for p in status["processes"]]
    assert summary == [
        (cluster["web1"].pk, "server", "web1", 101, True, 2),
        (cluster["web2"].pk, "server", "web2", 202, True, 2),
        (cluster["worker"].pk, "worker", "web1", 303, True, 0),
        (cluster["crashed"].pk, "server", "web3", 404, False, 1),
    ]
    ages = [p["heartbeat_age"] for p in status["processes"]]
    assert 1 <= ages[0] < 5 and 2 <= ages[1] < 6 and 0 <= ages[2] < 4 and 120 <= ages[3] < 130


def test_text_shows_heartbeat_age_and_sockets_per_group_and_process(cluster: dict[str, Process]) -> None:
    Process.objects.filter(pk=cluster["web1"].pk).update(messages_in_per_s=12.4, messages_out_per_s=30.0)
    Process.objects.filter(pk=cluster["web2"].pk).update(messages_in_per_s=1.0, messages_out_per_s=2.0)
    Process.objects.filter(pk=cluster["crashed"].pk).update(messages_in_per_s=500.0)
    lines = wsstatus().splitlines()
    assert lines[0] == "Processes: 3 live"
    web1, web2, worker, crashed = lines[1:5]
    assert web1.split()[:4] == [f"#{cluster['web1'].pk}", "server", "web1:101", "heartbeat"]
    assert "2 open sockets" in web1 and web1.endswith("12 in/s, 30 out/s")
    assert worker.split()[1:3] == ["worker", "web1:303"] and "0 open sockets" in worker
    assert web2.split()[2] == "web2:202"
    assert "heartbeat 12" in crashed and "1 open socket " in crashed
    assert crashed.endswith("DEAD (sockets not reaped yet)")
    # Rates add up over live processes only.
    assert lines[5:] == ["Messages: 13 in/s, 32 out/s", "Sockets: 5 open", "  chat  3", "  echo  2", "Rooms: 0"]
    assert "web4" not in "\n".join(lines)


def test_empty_database(db: None) -> None:
    assert wsstatus() == "Processes: 0 live\nMessages: 0 in/s, 0 out/s\nSockets: 0 open\nRooms: 0\n"
    assert json.loads(wsstatus("--json")) == {
        "processes": [],
        "groups": {},
        "sockets": 0,
        "messages_in_per_s": 0.0,
        "messages_out_per_s": 0.0,
        "rooms": {},
        "rooms_error": "",
    }


@override_settings(WSGROUPS={"PROCESS_TIMEOUT": 300})
def test_liveness_follows_process_timeout(cluster: dict[str, Process]) -> None:
    assert all(process.live for process in collect_status().processes)


def test_status_is_judged_at_the_given_time(cluster: dict[str, Process]) -> None:
    later: datetime = timezone.now() + timedelta(minutes=10)
    status = collect_status(now=later)
    assert [process.id for process in status.processes] == [
        cluster["web1"].pk,
        cluster["web2"].pk,
        cluster["crashed"].pk,
    ]
    assert not any(process.live for process in status.processes)


def test_format_status_aligns_columns_and_says_never_without_heartbeat() -> None:
    status = ClusterStatus(
        processes=[
            ProcessStatus(
                id=7,
                kind="server",
                hostname="a",
                pid=1,
                heartbeat_age=0.34,
                live=True,
                sockets=10,
                messages_in_per_s=5.2,
                messages_out_per_s=140.0,
            ),
            ProcessStatus(id=12, kind="worker", hostname="bb", pid=22, heartbeat_age=None, live=False, sockets=1),
        ],
        groups={"chat": 10, "x": 1},
        sockets=11,
        messages_in_per_s=5.2,
        messages_out_per_s=140.0,
    )
    assert format_status(status).splitlines() == [
        "Processes: 1 live",
        "  #7   server  a:1    heartbeat 0.3s ago  10 open sockets  5 in/s, 140 out/s",
        "  #12  worker  bb:22  heartbeat never     1 open socket    0 in/s, 0 out/s    DEAD (sockets not reaped yet)",
        "Messages: 5 in/s, 140 out/s",
        "Sockets: 11 open",
        "  chat  10",
        "  x     1",
    ]


def test_format_limit_events_lists_only_what_happened():
    from wsgroups.status import format_limit_events

    assert format_limit_events({}) == ""
    assert format_limit_events({"rate_limited": 0}) == ""
    assert format_limit_events({"rate_limited": 2, "group_full": 1}) == "limits: 1 group_full, 2 rate_limited"


def test_format_status_shows_a_process_s_limit_events() -> None:
    process = ProcessStatus(
        id=3,
        kind="server",
        hostname="h",
        pid=9,
        heartbeat_age=1.0,
        live=True,
        sockets=0,
        limit_events={"rate_limited": 4},
    )
    line = format_status(ClusterStatus(processes=[process], groups={}, sockets=0)).splitlines()[1]
    assert line.endswith("0 in/s, 0 out/s  limits: 4 rate_limited")


def test_format_status_lists_rooms_with_their_members_or_why_they_are_unknown() -> None:
    status = ClusterStatus(processes=[], groups={}, sockets=0, rooms={"lobby": 12, "wsgroups.user:3": 2})
    assert format_status(status).splitlines()[-3:] == ["Rooms: 2", "  lobby            12", "  wsgroups.user:3  2"]
    unknown = ClusterStatus(processes=[], groups={}, sockets=0, rooms_error="unknown: the layer is down")
    assert format_status(unknown).splitlines()[-1] == "Rooms: unknown: the layer is down"
    assert "Rooms" not in format_status(ClusterStatus(processes=[], groups={}, sockets=0))


def test_rooms_are_asked_of_the_live_servers_with_a_channel_only(cluster: dict[str, Process], monkeypatch) -> None:
    Process.objects.filter(pk=cluster["web1"].pk).update(channel_name="chan-web1")
    Process.objects.filter(pk=cluster["crashed"].pk).update(channel_name="chan-crashed")
    Process.objects.filter(pk=cluster["worker"].pk).update(channel_name="chan-worker")
    asked: list[list[str]] = []

    def room_counts(channels: Any) -> dict[str, int]:
        asked.append(list(channels))
        return {"lobby": 3}

    monkeypatch.setattr("wsgroups.status.room_counts", room_counts)
    assert json.loads(wsstatus("--json"))["rooms"] == {"lobby": 3}
    assert asked == [["chan-web1"]]


def test_rooms_unknown_when_the_channel_layer_is_down(db: None, monkeypatch) -> None:
    def room_counts(channels: Any) -> dict[str, int]:
        raise TransportError("the channel layer is unreachable; the message was not sent")

    monkeypatch.setattr("wsgroups.status.room_counts", room_counts)
    assert wsstatus().splitlines()[-1] == "Rooms: unknown: the channel layer is unreachable; the message was not sent"
