"""The counters a process reports: the handler-time histogram, the heartbeat's JSON and reading it back."""

from __future__ import annotations

import json

import pytest

from wsgroups.metrics import HANDLER_BUCKETS, REFUSAL_REASONS, HandlerTimes, ProcessMetrics, read_snapshot, snapshot


def test_a_handler_time_lands_in_the_first_bucket_whose_bound_holds_it() -> None:
    times = HandlerTimes()
    times.observe(0.0)  # the first bucket
    times.observe(HANDLER_BUCKETS[2])  # exactly a bound: that bucket (le means <=)
    times.observe(HANDLER_BUCKETS[2] * 1.01)  # just above: the next one
    times.observe(HANDLER_BUCKETS[-1] + 100)  # beyond the last bound: +Inf
    assert times.counts[0] == 1
    assert times.counts[2] == 1
    assert times.counts[3] == 1
    assert times.counts[-1] == 1
    assert times.count == 4
    assert times.sum == pytest.approx(HANDLER_BUCKETS[2] * 2.01 + HANDLER_BUCKETS[-1] + 100)


def test_the_snapshot_is_json_and_reads_back_as_it_was_counted() -> None:
    times = HandlerTimes()
    for seconds in (0.0001, 0.003, 0.003, 7.0):
        times.observe(seconds)
    stats = {"frames_in": 12, "frames_out": 30, "refused_at_limit": 2, "rate_limited": 1, "opened": 5}
    data = json.loads(json.dumps(snapshot(stats, {1000: 4, 1011: 1}, 3, times)))
    metrics = read_snapshot(data)
    assert (metrics.received, metrics.sent, metrics.layer_errors) == (12, 30, 3)
    assert metrics.closes == {1000: 4, 1011: 1}
    # Every reason is reported, zero or not, so that a rate over it exists from the start.
    assert set(metrics.refusals) == set(REFUSAL_REASONS.values())
    assert metrics.refusals["connection_limit"] == 2
    assert metrics.refusals["message_rate"] == 1
    assert metrics.refusals["origin"] == 0
    assert metrics.handler_bounds == HANDLER_BUCKETS
    assert sum(metrics.handler_counts) == 4
    assert metrics.handler_sum == pytest.approx(7.0061)
    buckets = metrics.cumulative_buckets()
    assert buckets[-1] == ("+Inf", 4)
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)  # cumulative
    assert dict(buckets)[repr(0.005)] == 3


@pytest.mark.parametrize(
    "data",
    [None, {}, [], "x", {"received": -1, "sent": "7", "closes": {"abc": 1, "1000": True}, "handler_seconds": {}}],
)
def test_rows_without_or_with_broken_counters_read_as_zero(data: object) -> None:
    metrics = read_snapshot(data)
    assert metrics.received == 0 and metrics.sent == 0
    assert metrics.closes in ({}, {1000: 0})
    assert metrics.cumulative_buckets()[-1] == ("+Inf", 0)


def test_buckets_recorded_by_another_version_keep_their_own_bounds() -> None:
    data = {"handler_seconds": {"bounds": [0.1, 1], "counts": [1, 2, 3], "sum": 9.5}}
    metrics = read_snapshot(data)
    assert metrics.cumulative_buckets() == [("0.1", 1), ("1.0", 3), ("+Inf", 6)]
    assert metrics.handler_sum == 9.5
    # Counts that do not fit the bounds are not trusted.
    assert read_snapshot({"handler_seconds": {"bounds": [0.1], "counts": [1]}}) == ProcessMetrics()
