"""The reconnect policy of bench/backoff.py: full jitter, cap, Retry-After."""

from __future__ import annotations

import pytest

from bench.backoff import BASE, CAP, parse_retry_after, reconnect_delay


def test_the_window_doubles_from_base_up_to_cap() -> None:
    highest = [reconnect_delay(n, rng=lambda: 1.0) for n in range(8)]
    assert highest == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert reconnect_delay(10_000, rng=lambda: 1.0) == CAP
    assert reconnect_delay(3, rng=lambda: 0.0) == 0.0


def test_delays_are_spread_over_the_whole_window() -> None:
    delays = [reconnect_delay(2) for _ in range(2000)]
    assert all(0 <= d < BASE * 4 for d in delays)
    assert min(delays) < 0.1 and max(delays) > 0.9


def test_retry_after_is_a_floor() -> None:
    assert reconnect_delay(0, 5.0, rng=lambda: 1.0) == 5.0
    assert reconnect_delay(9, 5.0, rng=lambda: 1.0) == CAP


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="attempt"):
        reconnect_delay(-1)
    with pytest.raises(ValueError, match="cap"):
        reconnect_delay(0, base=1.0, cap=0.5)


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None
