"""A small run of the benchmark harness (``python -m bench``) with a private Redis.

It checks that every scenario produced its figures, that nothing was lost where a
scenario could run, and that what wsgroups cannot do yet is reported as such.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

SIZES = {
    "--echo-connections": 5,
    "--echo-messages": 20,
    "--broadcast-sockets": 200,
    "--broadcast-messages": 3,
    "--ids-sockets": 200,
    "--ids-messages": 3,
    "--tick-sockets": 200,
    "--ticks": 2,
    "--churn-connections": 100,
    "--memory-sockets": 200,
    "--probe-timeout": 3,
    "--idle": 2,
    "--timeout": 40,
}
RATES = {
    ("echo", "messages/s"),
    ("echo", "round trip p50 (ms)"),
    ("echo", "round trip p99 (ms)"),
    ("group broadcast", "deliveries/s"),
    ("send by ID", "deliveries/s"),
    ("broadcaster tick", "deliveries/s"),
    ("churn", "connections/s"),
    ("memory", "server RSS after (MiB)"),
    ("ceiling", "deliveries/s"),
}
LOSSES = {"messages missing", "connections missing messages", "failed connections"}
#: Scenarios whose wsgroups side needs cross-process sending (they must be measured).
CROSS_PROCESS = {"group broadcast", "send by ID", "broadcaster tick"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("bench") / "results.jsonl"
    argv = [sys.executable, "-m", "bench", "--private-redis", "--out", str(out)]
    argv += [str(part) for pair in SIZES.items() for part in pair]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=150)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return done, lines


def _results(lines: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["scenario"], r["target"], r["metric"]): r for r in lines if r["type"] == "result"}


@pytest.mark.e2e
def test_harness_exits_cleanly_and_writes_a_run_line(run: Any) -> None:
    done, lines = run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert lines and lines[0]["type"] == "run"
    assert lines[0]["machine"]["nproc"] >= 1
    assert "| scenario | metric | wsgroups | bare Channels |" in done.stdout


@pytest.mark.e2e
def test_figures_are_present_and_positive(run: Any) -> None:
    results = _results(run[1])
    for scenario, metric in RATES:
        targets = ["raw"] if scenario == "ceiling" else ["bare"]
        if scenario != "ceiling":
            targets.append("wsgroups")
        for target in targets:
            record = results.get((scenario, target, metric))
            assert record is not None, f"no {metric} for {scenario} / {target}"
            assert record["status"] == "ok" and record["value"] > 0, record


@pytest.mark.e2e
def test_wsgroups_loses_nothing(run: Any) -> None:
    # Bare Channels may lose messages under load (that is one of the findings); wsgroups must not.
    measured = [
        r
        for (_, target, metric), r in _results(run[1]).items()
        if target == "wsgroups" and metric in LOSSES and r["status"] == "ok"
    ]
    assert {r["scenario"] for r in measured} >= CROSS_PROCESS
    lost = [r for r in measured if r["value"] != 0]
    assert not lost, lost


@pytest.mark.e2e
def test_no_scenario_errs_or_is_unavailable(run: Any) -> None:
    results = _results(run[1]).values()
    assert not [r for r in results if r["status"] != "ok"]
