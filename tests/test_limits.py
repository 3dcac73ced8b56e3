from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgroups.limits import REFUSAL_LOG_INTERVAL, ConnectionCounter, MessageRate, RefusalLog, group_refusal

# --- ConnectionCounter ----------------------------------------------------------------


def test_counter_admits_up_to_the_total_then_refuses():
    counter = ConnectionCounter()
    for i in range(3):
        assert counter.refusal(f"10.0.0.{i}", 3, None) is None
        counter.add(f"10.0.0.{i}")
    assert counter.refusal("10.0.0.9", 3, None) == "server is at its limit of 3 connections"


def test_counter_refuses_per_client_without_touching_other_clients():
    counter = ConnectionCounter()
    counter.add("a")
    counter.add("a")
    assert counter.refusal("a", None, 2) == "client address is at its limit of 2 connections"
    assert counter.refusal("b", None, 2) is None


def test_counter_none_means_no_limit():
    counter = ConnectionCounter()
    for _ in range(1000):
        counter.add("a")
    assert counter.refusal("a", None, None) is None


def test_counter_discard_frees_the_place_and_the_memory():
    counter = ConnectionCounter()
    counter.add("a")
    counter.add("a")
    counter.discard("a")
    assert counter.total == 1 and counter.by_client == {"a": 1}
    counter.discard("a")
    assert counter.total == 0 and counter.by_client == {}


def test_counter_discard_of_an_unknown_client_changes_nothing():
    counter = ConnectionCounter()
    counter.add("a")
    counter.discard("b")
    assert counter.total == 1 and counter.by_client == {"a": 1}


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcd")), max_size=200))
def test_property_counter_totals_match_a_model(steps):
    counter = ConnectionCounter()
    model: dict[str, int] = {}
    for adding, client in steps:
        if adding:
            counter.add(client)
            model[client] = model.get(client, 0) + 1
        else:
            counter.discard(client)
            if model.get(client):
                model[client] -= 1
                if not model[client]:
                    del model[client]
    assert counter.by_client == model
    assert counter.total == sum(model.values())


# --- group_refusal --------------------------------------------------------------------


def test_group_refusal_at_and_below_the_limit():
    assert group_refusal("chat", 1, 2) is None
    assert group_refusal("chat", 2, 2) == "group 'chat' is at its limit of 2 connections"
    assert group_refusal("chat", 10**6, None) is None


# --- MessageRate ----------------------------------------------------------------------


def test_rate_allows_a_burst_then_refuses():
    bucket = MessageRate(rate=5, burst=10, now=0.0)
    assert [bucket.allow(0.0) for _ in range(11)] == [True] * 10 + [False]


def test_rate_refills_with_time_up_to_the_burst():
    bucket = MessageRate(rate=5, burst=10, now=0.0)
    for _ in range(10):
        bucket.allow(0.0)
    assert not bucket.allow(0.1)  # half a token
    assert bucket.allow(0.2)  # one token after 0.2 s
    assert not bucket.allow(0.2)
    assert sum(bucket.allow(100.0) for _ in range(20)) == 10  # never more than the burst


def test_rate_paced_sender_is_never_refused():
    bucket = MessageRate(rate=5, burst=10, now=0.0)
    assert all(bucket.allow(i * 0.2) for i in range(1000))


def test_rate_clock_going_backwards_does_not_add_tokens():
    bucket = MessageRate(rate=5, burst=2, now=10.0)
    bucket.allow(10.0)
    bucket.allow(10.0)
    assert not bucket.allow(5.0)


@pytest.mark.parametrize(("rate", "burst", "argument"), [(0, 10, "rate"), (-1, 10, "rate"), (5, 0.5, "burst")])
def test_rate_rejects_impossible_parameters_naming_them(rate, burst, argument):
    with pytest.raises(ValueError, match=argument):
        MessageRate(rate, burst, 0.0)


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=500),
    gaps=st.lists(st.floats(min_value=0, max_value=2), max_size=300),
)
def test_property_rate_never_admits_more_than_burst_plus_rate_times_duration(rate, burst, gaps):
    bucket = MessageRate(rate, burst, 0.0)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        admitted += bucket.allow(now)
    assert admitted <= burst + rate * now + 1e-6


def test_refusal_log_writes_one_line_per_interval_and_counts_the_rest():
    now = [0.0]
    records: list[str] = []

    class Recorder(logging.Logger):
        def warning(self, msg: object, *args: object, **kwargs: object) -> None:
            records.append(str(msg) % args)

    log = RefusalLog(Recorder("test"), lambda: now[0])
    log.warning("refused %s", "a")
    now[0] += REFUSAL_LOG_INTERVAL / 2
    log.warning("refused %s", "b")
    now[0] += REFUSAL_LOG_INTERVAL / 2
    log.warning("refused %s", "c")
    assert records == ["refused a", f"refused c (1 more refusals in the last {REFUSAL_LOG_INTERVAL:g} s not logged)"]
