"""Handlers record what happened in a file the test process reads (``WSGROUPS_TEST_EVENTS``)."""

from __future__ import annotations

import json
import os
from typing import Any


def record(kind: str, **fields: Any) -> None:
    path = os.environ.get("WSGROUPS_TEST_EVENTS")
    if not path:
        return
    line = json.dumps({"event": kind, "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
