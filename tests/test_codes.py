from __future__ import annotations

import pytest

from wsgroups import CloseCode as PublicCloseCode
from wsgroups import ConnectionFlags as PublicConnectionFlags
from wsgroups.codes import CloseCode, ConnectionFlags, is_sendable_close_code


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
