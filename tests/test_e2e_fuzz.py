"""A bounded fuzz run against each real server: random client frames and mutated handshakes.

The cases come from :mod:`bench.fuzzing` (seed in, bytes out) and are checked by
:mod:`bench.fuzz`, which also runs longer fuzz sessions on servers of its own
(``python -m bench.fuzz``). The seed is ``WSGROUPS_FUZZ_SEED`` or a fixed one; a failure
prints it with the failing cases, each replayable with ``--seed`` and ``--case``.
"""

from __future__ import annotations

import os

import pytest

from bench import fuzz

from .conftest import Server

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("WSGROUPS_FUZZ_SEED", "20240601"))
MAX_CASES = 200
DURATION = 40.0


def test_random_frames_and_handshakes_keep_every_invariant(server: Server, base_env: dict[str, str]) -> None:
    run = fuzz.run_cases(server.port, SEED, max_cases=MAX_CASES, duration=DURATION, server=server.kind)
    assert len(run.results) >= 20, f"only {len(run.results)} cases ran in {DURATION} s"
    assert run.echo_ids, "no case opened an echo socket"
    fuzz.check_run(run, server.port, lambda: server.process.poll() is None, server.events, base_env)
    assert not run.failures(), fuzz.report(run)
