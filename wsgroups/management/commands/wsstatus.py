"""``manage.py wsstatus [--json]``: live processes, messages per second, open sockets per group,
rooms with their member counts."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from wsgroups.status import collect_status, format_status, with_rooms


class Command(BaseCommand):
    help = (
        "Show the live wsgroups processes (with heartbeat age), the open sockets per group and per process, "
        "and the rooms with their live members."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the status as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        status = with_rooms(collect_status())
        self.stdout.write(json.dumps(status.as_dict(), indent=2) if options["json"] else format_status(status))
