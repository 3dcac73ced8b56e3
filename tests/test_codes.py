from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgroups import CloseCode as PublicCloseCode
from wsgroups import ConnectionFlags as PublicConnectionFlags
from wsgroups.codes import (
    CLOSE_DECISIONS,
    MAX_CLOSE_REASON_BYTES,
    CloseCode,
    Closing,
    ConnectionFlags,
    close_for,
    fit_reason,
    is_sendable_close_code,
)
from wsgroups.handshake import check_close


def test_close_code_values_match_design():
    assert {code.name: code.value for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "PROTOCOL_ERROR": 1002,
        "CANT_ACCEPT_DATA": 1003,
        "WRONG_DATA_TYPE": 1007,
        "POLICY_VIOLATED": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "UNEXPECTED_CONDITION": 1011,
        "TRY_AGAIN_LATER": 1013,
    }


def test_close_codes_are_ints():
    assert CloseCode.NORMAL == 1000
    assert isinstance(CloseCode.CANT_ACCEPT_DATA, int)
    assert CloseCode(1011) is CloseCode.UNEXPECTED_CONDITION


def test_connection_flags_values():
    assert ConnectionFlags.NO_SPECIAL_FLAGS == 0
    assert ConnectionFlags.DISCONNECT_AFTER_SEND == 1
    assert ConnectionFlags.DISCONNECT_IMMEDIATELY == 2
    assert not ConnectionFlags.NO_SPECIAL_FLAGS
    both = ConnectionFlags.DISCONNECT_AFTER_SEND | ConnectionFlags.DISCONNECT_IMMEDIATELY
    assert both == 3
    assert ConnectionFlags.DISCONNECT_IMMEDIATELY in both


def test_public_package_exports_the_same_enums():
    assert PublicCloseCode is CloseCode
    assert PublicConnectionFlags is ConnectionFlags


@pytest.mark.parametrize("code", list(CloseCode))
def test_every_close_code_member_is_sendable(code):
    assert is_sendable_close_code(code)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
)
def test_sendable_close_codes(code):
    assert is_sendable_close_code(code) is True


@pytest.mark.parametrize("code", [-1, 0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_unsendable_close_codes(code):
    assert is_sendable_close_code(code) is False


def test_fit_reason_keeps_short_reasons():
    assert fit_reason("group 'g' has no text handler") == "group 'g' has no text handler"
    assert fit_reason("x" * 123) == "x" * 123


def test_fit_reason_cuts_long_ascii_with_ellipsis():
    out = fit_reason("x" * 200)
    assert out == "x" * 120 + "..."
    assert len(out.encode("utf-8")) == 123


def test_fit_reason_cuts_on_character_boundary():
    out = fit_reason("\u20ac" * 100)
    assert out == "\u20ac" * 40 + "..."
    assert len(out.encode("utf-8")) <= 123


@given(st.text())
def test_property_fit_reason_fits_and_is_a_prefix(reason):
    out = fit_reason(reason)
    assert len(out.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
    if len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES:
        assert out == reason
    else:
        assert out.endswith("...")
        assert reason.startswith(out[:-3])
        assert len(out[:-3].encode("utf-8")) > MAX_CLOSE_REASON_BYTES - 3 - 4
    check_close(1000, out)


@given(st.text(min_size=1, max_size=200))
def test_property_fit_reason_keeps_the_longest_whole_character_prefix(reason):
    out = fit_reason(reason)
    assert fit_reason(out) == out
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        assert out == reason
        return
    kept = out[:-3]
    # Whole characters only: the kept part is a character prefix of the reason ...
    assert reason[: len(kept)] == kept
    assert encoded.startswith(kept.encode("utf-8"))
    # ... and the longest one that leaves room for "...".
    assert len(kept.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES - 3
    assert len(reason[: len(kept) + 1].encode("utf-8")) > MAX_CLOSE_REASON_BYTES - 3
    assert check_close(1000, out) == (1000, out)


# --- the close decisions --------------------------------------------------------------

DETAILS = {"group": "chat", "kind": "text", "size": 10, "limit": 5, "rate": 2.5}


def test_every_situation_has_a_decision():
    assert set(CLOSE_DECISIONS) == set(Closing)


@pytest.mark.parametrize("situation", [s for s in Closing if s is not Closing.PROCESS_DIED])
def test_every_sent_decision_is_a_valid_close_frame(situation):
    code, reason = close_for(situation, **DETAILS)
    assert check_close(code, reason) == (code, reason)


def test_a_dead_process_is_recorded_as_1006_and_never_sent():
    code, reason = close_for(Closing.PROCESS_DIED)
    assert code == 1006
    assert not is_sendable_close_code(code)
    assert reason == "server process died"


@pytest.mark.parametrize(
    ("situation", "details", "expected"),
    [
        (Closing.MISSING_HANDLER, {"group": "g", "kind": "binary"}, (1003, "group 'g' has no binary handler")),
        (Closing.HANDLER_ERROR, {}, (1011, "server error in handler")),
        (Closing.MESSAGE_TOO_BIG, {"size": 9, "limit": 8}, (1009, "message of 9 bytes exceeds the limit of 8")),
        (Closing.RATE_LIMITED, {"rate": 2.5}, (1008, "rate limit: more than 2.5 messages per second")),
        (Closing.OUTBOX_OVERFLOW, {}, (1013, "outgoing buffer full: client too slow")),
        (Closing.GROUP_FULL, {"group": "g", "limit": 3}, (1013, "group 'g' is at its limit of 3 connections")),
        (Closing.UPGRADE_RESPONSE, {}, (1011, "upgrade view returned a response")),
        (Closing.SHUTDOWN, {}, (1001, "server shutting down")),
        (Closing.CLUSTER_LOST, {}, (1013, "server lost contact with its cluster; reconnect")),
    ],
)
def test_close_decisions(situation, details, expected):
    assert close_for(situation, **details) == expected


def test_a_long_group_name_is_fitted_into_the_reason():
    code, reason = close_for(Closing.MISSING_HANDLER, group="\u20ac" * 200, kind="text")
    assert code == 1003
    assert len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
    assert reason.endswith("...")
