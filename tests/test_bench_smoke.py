"""A small run of the benchmark harness (``python -m bench``) with a private Redis.

It checks that every scenario produced its figures, that nothing was lost where a
scenario could run, and that what wsgroups cannot do yet is reported as such. The soak
runs for a few seconds: it must lose nothing and record its RSS and fd series.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.soak import Load, Tracked, account

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
    "--room-sockets": 200,
    "--room-messages": 3,
    "--room-rounds": 2,
    "--room-churn-sockets": 100,
    "--room-churn-rounds": 2,
    "--probe-timeout": 3,
    "--idle": 2,
    "--timeout": 40,
    "--soak-duration": 12,
    "--soak-sample": 2,
    "--soak-warmup": 4,
    "--soak-sockets": 100,
    "--soak-churn-life": 2,
    "--soak-drain": 2,
    "--soak-margin": 60,
    "--storm-sockets": 300,
    "--storm-duration": 8,
}
SOAK_SAMPLES = 12 // 2 + 1
RATES = {
    ("echo", "messages/s"),
    ("echo", "round trip p50 (ms)"),
    ("echo", "round trip p99 (ms)"),
    ("group broadcast", "deliveries/s"),
    ("send by ID", "deliveries/s"),
    ("broadcaster tick", "deliveries/s"),
    ("churn", "connections/s"),
    ("churn", "server CPU per connection (ms)"),
    ("memory", "server RSS after (MiB)"),
    ("room broadcast", "deliveries/s"),
    ("group broadcast, same sockets", "deliveries/s"),
    ("room churn", "joins+leaves/s"),
    ("memory", "opening them, connections/s"),
    ("ceiling", "deliveries/s"),
}
LOSSES = {
    "messages missing",
    "connections missing messages",
    "failed connections",
    "messages lost",
    "sockets that lost messages",
    "duplicate messages",
    "misdelivered messages",
    "unparsed frames",
    "unexpected closes",
}
#: Scenarios whose wsgroups side needs cross-process sending (they must be measured).
CROSS_PROCESS = {
    "group broadcast",
    "send by ID",
    "broadcaster tick",
    "soak",
    "room broadcast",
    "room churn",
    "reconnect storm",
}
#: Rows that are not measured on purpose (the reason is in their note).
NOT_MEASURED = {("soak", "bare"), ("reconnect storm", "bare")}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("bench") / "results.jsonl"
    argv = [sys.executable, "-m", "bench", "--private-redis", "--scenarios", "all", "--out", str(out)]
    argv += [str(part) for pair in SIZES.items() for part in pair]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280)
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
    assert not [r for r in results if r["status"] != "ok" and (r["scenario"], r["target"]) not in NOT_MEASURED]


@pytest.mark.e2e
def test_soak_loses_nothing_and_records_its_series(run: Any) -> None:
    results = _results(run[1])

    def value(metric: str) -> float:
        record = results[("soak", "wsgroups", metric)]
        assert record["status"] == "ok", record
        return float(record["value"])

    assert value("messages lost") == 0
    assert value("churn cycles") > 0 and value("group broadcasts sent") > 0 and value("ID rounds sent") > 0
    # Every stable socket was known open for every call: the accounting expects them all.
    stable_each = value("group broadcasts sent") + value("ID rounds sent")
    assert value("messages expected") >= value("stable sockets") * stable_each > 0
    assert value("messages delivered") >= value("messages expected")
    samples = [line for line in run[1] if line["type"] == "sample" and line["scenario"] == "soak"]
    assert len(samples) == SOAK_SAMPLES
    for sample in samples:
        assert len(sample["servers"]) == 2
        assert all(server["rss_mib"] > 0 and server["fds"] > 0 for server in sample["servers"])
    assert samples[-1]["received"] > samples[0]["received"]
    for server in (0, 1):
        assert value(f"server {server} RSS after warm-up (MiB)") > 0
        assert value(f"server {server} fds after all closed") > 0
    assert "soak" in run[0].stdout and "RSS (MiB)" in run[0].stdout


@pytest.mark.e2e
def test_reconnect_storm_gets_everyone_back_once_and_loses_nothing(run: Any) -> None:
    results = _results(run[1])

    def value(metric: str) -> float:
        record = results[("reconnect storm", "wsgroups", metric)]
        assert record["status"] == "ok", record
        return float(record["value"])

    old = value("old sockets (on the stopped server)")
    assert value("sockets") == SIZES["--storm-sockets"] and old == SIZES["--storm-sockets"] // 2
    assert value("clients that never reconnected") == 0
    assert 0 < value("seconds until every client reconnected") < 60
    assert value("reconnect attempts") >= old
    assert value("old sockets closed with 1001") == old
    assert value("old sockets whose handler did not run") == 0
    assert value("disconnect handlers run more than once") == 0
    assert value("sockets whose handler did not run once in the end") == 0
    # Every socket was sent to by ID while known open: before the SIGTERM, or after reconnecting.
    assert value("messages expected") >= value("sockets") > 0
    assert value("messages lost") == 0 and value("messages delivered") >= value("messages expected")
    assert "not measured" in results[("reconnect storm", "bare", "messages lost")]["status"]


def _tracked(opened: float, known_until: float, socket_id: int, group: list[int], ids: list[int]) -> Tracked:
    tracked = Tracked(None, 0, True, opened, 4, known_until, socket_id)  # type: ignore[arg-type]
    for seq in group:
        tracked.group[seq] = 1
    for seq in ids:
        tracked.ids[seq] = 1
    return tracked


def test_soak_accounting_counts_what_was_sent_while_known_open() -> None:
    group_log = [{"seq": seq, "t0": 10.0 * seq + 1, "t1": 10.0 * seq + 2} for seq in range(4)]
    ids_log = [{"seq": seq, "t0": 10.0 * seq + 3, "t1": 10.0 * seq + 4, "ids": [7, 8]} for seq in range(4)]
    load = Load(4)
    # Known open for the whole run, missing broadcast 2 and ID round 3: 2 lost of 8.
    load.tracked.append(_tracked(0.0, float("inf"), 7, [0, 1, 3], [0, 1, 2]))
    # Known open from 5 to 21.5: broadcast 1 and ID round 1 expected (and received); what
    # arrived of broadcast 2 (its call returned after 21.5) is not expected.
    load.tracked.append(_tracked(5.0, 21.5, 8, [1, 2], [1]))
    result = account(load, group_log, ids_log)
    assert (result.expected, result.lost, result.lost_sockets, result.in_window_received) == (10, 2, 1, 8)
