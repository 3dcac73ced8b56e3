"""wsgroups.bulk_insert: bulk_create(ignore_conflicts=True) with one prepared statement."""

from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from wsgroups import bulk_insert
from wsgroups.bulk_insert import insert_ignoring_conflicts
from wsgroups.ids import make_id
from wsgroups.models import Connection, Process

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=dt_timezone.utc)


def row(process: Process, n: int, **fields: object) -> Connection:
    values = {"group": "chat", "path": "/ws", "opened_at": T0, "process": process, "recorded_rooms": [], **fields}
    return Connection(id=make_id(9, n), **values)


def test_rows_arrive_with_every_value_as_the_orm_reads_it():
    process = Process.objects.create(hostname="web-1", pid=1, kind="server")
    rows = [
        row(process, 1, recorded_rooms=["lobby", "ünïcode"], user_id=7, session_key="s", close_code=None),
        row(process, 2, state=Connection.State.CLOSED, closed_at=T0, close_code=4001, close_reason="bye"),
    ]
    insert_ignoring_conflicts(Connection, rows)
    first, second = Connection.objects.get(pk=make_id(9, 1)), Connection.objects.get(pk=make_id(9, 2))
    assert (first.recorded_rooms, first.user_id, first.session_key, first.opened_at) == (
        ["lobby", "ünïcode"],
        7,
        "s",
        T0,
    )
    assert (first.state, first.closed_at, first.close_code) == ("open", None, None)
    assert (second.state, second.closed_at, second.close_code, second.close_reason) == ("closed", T0, 4001, "bye")


def test_a_row_whose_key_is_there_already_is_skipped_and_the_others_go_in():
    process = Process.objects.create(hostname="web-1", pid=1, kind="server")
    insert_ignoring_conflicts(Connection, [row(process, 1, group="first")])
    insert_ignoring_conflicts(Connection, [row(process, 1, group="second"), row(process, 3)])
    assert Connection.objects.get(pk=make_id(9, 1)).group == "first"
    assert Connection.objects.filter(pk=make_id(9, 3)).exists()


def test_one_statement_for_many_rows_compiled_once():
    process = Process.objects.create(hostname="web-1", pid=1, kind="server")
    insert_ignoring_conflicts(Connection, [row(process, 1000)])
    assert bulk_insert._statements[("default", Connection)] is not None
    with CaptureQueriesContext(connection) as queries:
        insert_ignoring_conflicts(Connection, [row(process, n) for n in range(1, 201)])
    assert len(queries.captured_queries) == 1  # one executemany
    assert Connection.objects.count() == 201


def test_nothing_to_insert_touches_no_database():
    with CaptureQueriesContext(connection) as queries:
        insert_ignoring_conflicts(Connection, [])
    assert queries.captured_queries == []
