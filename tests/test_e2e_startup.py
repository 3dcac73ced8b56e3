"""Every kind of process refuses a configuration the system checks reject, with the check's id."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from .conftest import ROOT, Server

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., Server]


@pytest.mark.parametrize("kind", ["daphne", "uvicorn", "runserver"])
def test_servers_refuse_to_start_on_an_in_memory_channel_layer(server_factory: ServerFactory, kind: str) -> None:
    with pytest.raises(RuntimeError, match=r"exited with") as caught:
        server_factory(kind, extra_env={"WSGROUPS_TEST_IN_MEMORY_LAYER": "1"})
    log = str(caught.value)
    assert "wsgroups.E009" in log
    assert "in memory: it cannot link processes" in log


@pytest.mark.parametrize("command", [["runworker", "wsgroups"], ["wsbroadcast", "--once"]])
def test_commands_refuse_to_start_on_an_in_memory_channel_layer(base_env: dict[str, str], command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**base_env, "WSGROUPS_TEST_IN_MEMORY_LAYER": "1"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "wsgroups.E009" in done.stderr.decode()
