"""Inserting many registry rows with one prepared statement.

``bulk_create`` compiles its SQL for every batch, field by field and row by row: writing
the rows of new sockets cost about a sixth of a server's CPU while sockets churn. The
statement for one row is the same for every row, so :func:`insert_ignoring_conflicts`
compiles it once per model and database (with Django's compiler, so every backend gets its
own syntax for skipping conflicting rows) and hands all rows to the driver's
``executemany``. Each value is still prepared by its field for the database, as
``bulk_create`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections, models, router
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

__all__ = ["insert_ignoring_conflicts"]

#: (database alias, model) -> (the one-row INSERT, its fields); None: not preparable.
_statements: dict[tuple[str, type[models.Model]], tuple[str, list[Any]] | None] = {}


def _statement(model: type[models.Model], using: str, first: models.Model) -> tuple[str, list[Any]] | None:
    key = (using, model)
    if key not in _statements:
        fields = list(model._meta.concrete_fields)
        if any(hasattr(field, "get_placeholder") for field in fields):
            _statements[key] = None  # its placeholder may depend on the value: not one statement
        else:
            query = InsertQuery(model, on_conflict=OnConflict.IGNORE)
            query.insert_values(fields, [first])
            statements = query.get_compiler(using=using).as_sql()
            _statements[key] = (statements[0][0], fields) if len(statements) == 1 else None
    return _statements[key]


def insert_ignoring_conflicts(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """Insert ``objs`` (every concrete field set, primary keys included), skipping those
    whose primary key is already there: ``bulk_create(objs, ignore_conflicts=True)``."""
    if not objs:
        return
    using = router.db_for_write(model)
    prepared = _statement(model, using, objs[0])
    if prepared is None:
        model._default_manager.using(using).bulk_create(objs, ignore_conflicts=True, batch_size=500)
        return
    sql, fields = prepared
    connection = connections[using]
    rows = [[field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields] for obj in objs]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
