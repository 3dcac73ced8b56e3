"""The Autobahn test suite's cases against wsgroups' echo endpoint under daphne, uvicorn and hypercorn.

Every protocol case (1.x to 7.x, 10.x) must pass except the known failures of the server
program itself (``bench.conformance.KNOWN_FAILURES``), which the same server fails with
a bare ASGI echo application too; with ``PERMESSAGE_DEFLATE`` on, a subset of the
compression cases (12.x, 13.x) covering every subcategory must pass. The full run, with
every compression case, is ``python -m bench.conformance`` (report in bench/CONFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.conformance import (
    CI_COMPRESSION_CASES,
    ENDPOINT,
    KNOWN_FAILURES,
    PROTOCOL_CASES,
    SERVERS,
    STOCK_APPLICATION,
    failures,
    run_cases,
    server_env,
)
from bench.servers import ProcessGroup

from .conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture
def stock_servers(base_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessGroup]:
    """Bare ASGI echo servers (no Django, no wsgroups), stopped afterwards."""
    with ProcessGroup(tmp_path, dict(base_env), grace=5) as processes:
        yield processes


def _start(server_factory: Callable[..., Server], kind: str, deflate: bool) -> Server:
    return server_factory(kind, extra_env=server_env({}, deflate))


@pytest.mark.parametrize("kind", SERVERS)
def test_protocol_cases_pass_but_the_servers_own_failures(
    kind: str, server_factory: Callable[..., Server], stock_servers: ProcessGroup
) -> None:
    server = _start(server_factory, kind, deflate=False)
    outcomes = run_cases(f"{server.url}{ENDPOINT}", PROTOCOL_CASES, timeout=400)
    assert len(outcomes) == 247
    failed = failures(outcomes)
    details = {case: f"{o.behavior}/{o.behavior_close} {o.remote_close_code}: {o.detail}" for case, o in failed.items()}
    assert set(failed) == set(KNOWN_FAILURES[kind]), details

    # The known failures are the server program's own: its stock echo fails them as well.
    if KNOWN_FAILURES[kind]:
        stock = stock_servers.start_server(kind, f"stock-{kind}", application=STOCK_APPLICATION)
        stock_outcomes = run_cases(f"ws://127.0.0.1:{stock.port}{ENDPOINT}", sorted(KNOWN_FAILURES[kind]), timeout=120)
        assert set(failures(stock_outcomes)) == set(KNOWN_FAILURES[kind])
        for case in KNOWN_FAILURES[kind]:
            ours, theirs = failed[case], failures(stock_outcomes)[case]
            assert (ours.behavior, ours.behavior_close, ours.remote_close_code) == (
                theirs.behavior,
                theirs.behavior_close,
                theirs.remote_close_code,
            )


@pytest.mark.parametrize("kind", SERVERS)
def test_compression_cases_pass_with_permessage_deflate_on(kind: str, server_factory: Callable[..., Server]) -> None:
    server = _start(server_factory, kind, deflate=True)
    outcomes = run_cases(f"{server.url}{ENDPOINT}", CI_COMPRESSION_CASES, timeout=500)
    assert len(outcomes) == len(CI_COMPRESSION_CASES)
    failed = failures(outcomes)
    assert not failed, {case: f"{o.behavior}/{o.behavior_close}: {o.detail}" for case, o in failed.items()}


def test_compression_cases_fail_with_permessage_deflate_off(server_factory: Callable[..., Server]) -> None:
    """The cases see no permessage-deflate when the setting is off (so they can fail)."""
    server = _start(server_factory, "hypercorn", deflate=False)
    outcomes = run_cases(f"{server.url}{ENDPOINT}", ["12.1.1"], timeout=120)
    assert set(failures(outcomes)) == {"12.1.1"}
