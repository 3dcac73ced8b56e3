"""Unit tests of wsgroups.models (string forms, the live() queryset, ordering, verbose
names, the unique subscription) and of cluster.write_registry, the registry's writer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from wsgroups.cluster import write_registry
from wsgroups.ids import make_id
from wsgroups.metrics import read_snapshot
from wsgroups.models import BroadcastSubscription, Connection, IdBlock, Process

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=dt_timezone.utc)


def make_process(**fields):
    values = {"hostname": "web-1", "pid": 4321, "kind": "server", **fields}
    return Process.objects.create(**values)


def make_connection(process, socket_id, *, state=Connection.State.OPEN, opened_at=T0, group="chat"):
    return Connection.objects.create(
        id=socket_id, group=group, state=state, opened_at=opened_at, process=process, path="/ws"
    )


# --- __str__ --------------------------------------------------------------------------------


def test_str_of_each_model():
    process = make_process(kind="worker", hostname="box", pid=77)
    assert str(process) == f"worker box:77 (#{process.pk})"
    block = IdBlock.objects.create(process=process)
    assert str(block) == f"ID block {block.pk} of worker box:77 (#{process.pk})"
    conn = make_connection(process, make_id(block.pk, 1))
    assert str(conn) == f"WebSocket {make_id(block.pk, 1)} (chat, open)"
    conn.state = Connection.State.CLOSED
    assert str(conn) == f"WebSocket {make_id(block.pk, 1)} (chat, closed)"
    sub = BroadcastSubscription.objects.create(websocket_id=make_id(3, 9), num_broadcasted=4)
    assert str(sub) == f"subscription of WebSocket {make_id(3, 9)} (4 sent)"


# --- Connection.objects.live() -------------------------------------------------------------


def test_live_returns_only_open_connections():
    process = make_process()
    open_ids = {make_id(1, 1), make_id(1, 3)}
    for n in (1, 2, 3, 4):
        state = Connection.State.OPEN if make_id(1, n) in open_ids else Connection.State.CLOSED
        make_connection(process, make_id(1, n), state=state)
    assert set(Connection.objects.live().values_list("pk", flat=True)) == open_ids
    # live() is a queryset method: it chains with filters both ways.
    assert list(Connection.objects.filter(pk=make_id(1, 2)).live()) == []
    assert Connection.objects.live().filter(pk=make_id(1, 3)).count() == 1


def test_a_new_connection_row_is_open_by_default():
    conn = make_connection(make_process(), make_id(2, 1), state=Connection.State.OPEN)
    conn = Connection.objects.create(id=make_id(2, 2), group="g", opened_at=T0, process=conn.process)
    assert conn.state == Connection.State.OPEN
    assert conn in Connection.objects.live()


# --- ordering and verbose names ------------------------------------------------------------


def test_process_ordering_newest_first():
    first, second, third = (make_process(pid=n) for n in (1, 2, 3))
    for process, hours in ((first, 1), (second, 3), (third, 2)):
        Process.objects.filter(pk=process.pk).update(started_at=T0 + timedelta(hours=hours))
    assert list(Process.objects.values_list("pid", flat=True)) == [2, 3, 1]


def test_id_block_ordering_highest_first():
    process = make_process()
    blocks = [IdBlock.objects.create(process=process).pk for _ in range(3)]
    assert list(IdBlock.objects.values_list("pk", flat=True)) == sorted(blocks, reverse=True)


def test_connection_ordering_newest_opened_first():
    process = make_process()
    for n, minutes in ((1, 5), (2, 1), (3, 9)):
        make_connection(process, make_id(1, n), opened_at=T0 + timedelta(minutes=minutes))
    assert list(Connection.objects.values_list("pk", flat=True)) == [make_id(1, 3), make_id(1, 1), make_id(1, 2)]


def test_subscription_ordering_oldest_first():
    subs = [BroadcastSubscription.objects.create(websocket_id=make_id(1, n)) for n in (1, 2, 3)]
    for sub, minutes in zip(subs, (7, 2, 5), strict=True):
        BroadcastSubscription.objects.filter(pk=sub.pk).update(created_at=T0 + timedelta(minutes=minutes))
    assert list(BroadcastSubscription.objects.values_list("websocket_id", flat=True)) == [
        make_id(1, 2),
        make_id(1, 3),
        make_id(1, 1),
    ]


@pytest.mark.parametrize(
    ("model", "singular", "plural"),
    [
        (Process, "process", "processes"),
        (IdBlock, "ID block", "ID blocks"),
        (Connection, "WebSocket connection", "WebSocket connections"),
        (BroadcastSubscription, "broadcast subscription", "broadcast subscriptions"),
    ],
)
def test_verbose_names(model, singular, plural):
    assert str(model._meta.verbose_name) == singular
    assert str(model._meta.verbose_name_plural) == plural


def test_field_verbose_names():
    assert Connection._meta.get_field("id").verbose_name == "WebSocket ID"
    assert BroadcastSubscription._meta.get_field("websocket_id").verbose_name == "WebSocket ID"
    assert BroadcastSubscription._meta.get_field("num_broadcasted").verbose_name == "messages broadcast"


def test_models_match_their_migrations():
    out = StringIO()
    call_command("makemigrations", "wsgroups", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


# --- BroadcastSubscription ------------------------------------------------------------------


def test_subscription_websocket_id_is_unique():
    BroadcastSubscription.objects.create(websocket_id=make_id(5, 5))
    with pytest.raises(IntegrityError), transaction.atomic():
        BroadcastSubscription.objects.create(websocket_id=make_id(5, 5))
    BroadcastSubscription.objects.create(websocket_id=make_id(5, 6))
    assert BroadcastSubscription.objects.count() == 2


# --- cluster.write_registry -----------------------------------------------------------------


@dataclass
class Entry:
    """What write_registry reads of a socket (the RegistryEntry protocol)."""

    id: int
    group: str = "chat"
    path: str = "/ws/chat"
    opened_at: datetime | None = T0
    session_key: str | None = None
    user_id: int | None = None
    remote_addr: str = "192.0.2.1"
    subprotocol: str | None = None
    close_code: int | None = None
    close_reason: str = ""


def test_write_registry_inserts_opened_sockets_as_open_rows():
    process = make_process()
    a = Entry(make_id(8, 1), session_key="sess-a", subprotocol="chat.v2", user_id=12)
    b = Entry(make_id(8, 2), group="news", path="/" + "p" * 3000, opened_at=None)
    before = timezone.now()
    write_registry(process.pk, [a, b], [])
    row_a = Connection.objects.get(pk=a.id)
    assert (row_a.group, row_a.path, row_a.state, row_a.opened_at) == ("chat", "/ws/chat", "open", T0)
    assert (row_a.session_key, row_a.subprotocol, row_a.user_id) == ("sess-a", "chat.v2", 12)
    assert (row_a.remote_addr, row_a.process_id, row_a.closed_at, row_a.close_code) == (
        "192.0.2.1",
        process.pk,
        None,
        None,
    )
    row_b = Connection.objects.get(pk=b.id)
    assert row_b.group == "news"
    assert len(row_b.path) == 2048  # cut to the column
    assert (row_b.session_key, row_b.subprotocol) == ("", "")
    assert row_b.opened_at >= before  # no opened_at: now
    assert set(Connection.objects.live().values_list("pk", flat=True)) == {a.id, b.id}


def test_write_registry_records_a_socket_opened_and_closed_in_one_batch_as_closed():
    process = make_process()
    gone = Entry(make_id(8, 1), close_code=4000, close_reason="r" * 300)
    stays = Entry(make_id(8, 2))
    with CaptureQueriesContext(connection) as queries:
        write_registry(process.pk, [gone, stays], [gone])
    # Inserted as closed: no UPDATE after the INSERT.
    assert not [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    row = Connection.objects.get(pk=gone.id)
    assert row.state == Connection.State.CLOSED
    assert row.close_code == 4000
    assert row.close_reason == "r" * 255
    assert row.closed_at is not None
    assert row.opened_at == T0
    assert Connection.objects.get(pk=stays.id).state == Connection.State.OPEN


def test_write_registry_closes_rows_written_earlier_with_each_code_and_reason():
    process = make_process()
    socks = [Entry(make_id(8, n)) for n in (1, 2, 3, 4)]
    write_registry(process.pk, socks, [])
    socks[0].close_code, socks[0].close_reason = 1000, ""
    socks[1].close_code, socks[1].close_reason = 1001, "server shutting down"
    socks[2].close_code, socks[2].close_reason = 1000, ""
    write_registry(process.pk, [], socks[:3])
    rows = {row.pk: row for row in Connection.objects.all()}
    outcomes = {pk: (row.state, row.close_code, row.close_reason) for pk, row in rows.items()}
    assert outcomes == {
        socks[0].id: ("closed", 1000, ""),
        socks[1].id: ("closed", 1001, "server shutting down"),
        socks[2].id: ("closed", 1000, ""),
        socks[3].id: ("open", None, ""),
    }
    assert all(rows[s.id].closed_at is not None for s in socks[:3])
    assert rows[socks[3].id].closed_at is None


def test_write_registry_ignores_a_row_written_twice_and_an_empty_batch():
    process = make_process()
    entry = Entry(make_id(8, 1))
    write_registry(process.pk, [entry], [])
    write_registry(process.pk, [Entry(make_id(8, 1), group="other")], [])  # no IntegrityError
    write_registry(process.pk, [], [])
    assert list(Connection.objects.values_list("pk", "group")) == [(entry.id, "chat")]


@pytest.mark.django_db
def test_a_process_of_the_previous_version_registers_without_the_metrics_column() -> None:
    """During a rollout, processes that do not know ``Process.metrics`` still insert their row."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO wsgroups_process (hostname, pid, kind, channel_name, started_at,"
            " messages_in_per_s, messages_out_per_s, limit_events) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            ["old", 1, "server", "", timezone.now(), 0.0, 0.0, "{}"],
        )
    process = Process.objects.get(hostname="old")
    assert process.metrics is None
    assert read_snapshot(process.metrics).received == 0
