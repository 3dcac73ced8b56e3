"""bench.conformance without servers: the case sets, the known failures and the report."""

from __future__ import annotations

from bench.conformance import (
    CI_COMPRESSION_CASES,
    KNOWN_FAILURES,
    MAX_MESSAGE_SIZE,
    SERVERS,
    Outcome,
    Row,
    failures,
    report,
    server_env,
)


def outcome(case: str, passed: bool = True, code: int | None = 1000) -> Outcome:
    return Outcome(case, passed, "OK" if passed else "FAILED", "OK" if passed else "WRONG CODE", code, "")


def test_ci_subset_covers_every_compression_subcategory():
    subcategories = {".".join(case.split(".")[:2]) for case in CI_COMPRESSION_CASES}
    assert subcategories == {f"12.{n}" for n in range(1, 6)} | {f"13.{n}" for n in range(1, 8)}
    assert len(set(CI_COMPRESSION_CASES)) == len(CI_COMPRESSION_CASES)


def test_every_server_has_its_known_failures_with_reasons():
    assert set(KNOWN_FAILURES) == set(SERVERS)
    for cases in KNOWN_FAILURES.values():
        for case, reason in cases.items():
            assert case.replace(".", "").isdigit() and len(reason) > 40


def test_server_env_sets_compression_and_message_size():
    env = server_env({"A": "1"}, deflate=True)
    assert env == {
        "A": "1",
        "WSGROUPS_TEST_PERMESSAGE_DEFLATE": "1",
        "WSGROUPS_TEST_MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE),
    }
    assert server_env({}, deflate=False)["WSGROUPS_TEST_PERMESSAGE_DEFLATE"] == "0"


def test_failures_and_unexpected_failures():
    outcomes = [outcome("1.1.1"), outcome("7.1.5", passed=False, code=1002), outcome("2.1", passed=False)]
    assert set(failures(outcomes)) == {"7.1.5", "2.1"}
    row = Row("uvicorn", False, outcomes, stock_failures={"7.1.5": outcomes[1]}, seconds=3.0)
    assert set(row.unexpected()) == {"2.1"}


def test_report_lists_counts_known_and_other_failures():
    outcomes = [outcome("1.1.1"), outcome("7.1.5", passed=False, code=1002), outcome("2.1", passed=False)]
    rows = [
        Row("uvicorn", False, outcomes, stock_failures={"7.1.5": outcomes[1]}, seconds=3.0),
        Row("daphne", True, [outcome("1.1.1")], stock_failures={}, seconds=1.0),
    ]
    text = report(rows, "python -m bench.conformance")
    assert "| uvicorn | off | 3 | 1 | 7.1.5 | 2.1 | 3 |" in text
    assert "| daphne | on | 1 | 1 | - | - | 1 |" in text
    assert "close code 1002; the stock server fails it too" in text
    assert "- uvicorn (off) 2.1: FAILED / WRONG CODE, close code 1000 (stock passes)" in text
