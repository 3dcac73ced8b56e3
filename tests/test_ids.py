from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgroups.ids import (
    MAX_BLOCK,
    MAX_ID,
    MAX_SEQUENCE,
    SEQUENCE_BITS,
    make_id,
    split_id,
    validate_id,
)

blocks = st.integers(min_value=1, max_value=MAX_BLOCK)
sequences = st.integers(min_value=1, max_value=MAX_SEQUENCE)


def test_constants_keep_ids_below_2_to_the_53():
    assert MAX_ID == 2**53 - 1
    assert MAX_SEQUENCE == 2**SEQUENCE_BITS - 1
    assert make_id(MAX_BLOCK, MAX_SEQUENCE) == MAX_ID


@given(blocks, sequences)
def test_make_split_round_trip(block, sequence):
    socket_id = make_id(block, sequence)
    assert split_id(socket_id) == (block, sequence)


@given(blocks, sequences)
def test_made_ids_are_positive_below_2_to_the_53_and_valid(block, sequence):
    socket_id = make_id(block, sequence)
    assert 0 < socket_id < 2**53
    assert validate_id(socket_id) == socket_id
    assert validate_id(str(socket_id)) == socket_id


@given(blocks, sequences, blocks, sequences)
def test_distinct_block_sequence_pairs_give_distinct_ids(b1, s1, b2, s2):
    if (b1, s1) != (b2, s2):
        assert make_id(b1, s1) != make_id(b2, s2)


def test_smallest_id():
    assert make_id(1, 1) == 2**SEQUENCE_BITS + 1


@pytest.mark.parametrize(("block", "sequence"), [(0, 1), (-1, 1), (MAX_BLOCK + 1, 1)])
def test_make_id_rejects_block_out_of_range(block, sequence):
    with pytest.raises(ValueError, match=r"^block"):
        make_id(block, sequence)


@pytest.mark.parametrize(("block", "sequence"), [(1, 0), (1, -1), (1, MAX_SEQUENCE + 1)])
def test_make_id_rejects_sequence_out_of_range(block, sequence):
    with pytest.raises(ValueError, match=r"^sequence"):
        make_id(block, sequence)


@pytest.mark.parametrize("value", [make_id(1, 1), make_id(7, 42), MAX_ID])
def test_validate_id_accepts_ints(value):
    assert validate_id(value) == value


@pytest.mark.parametrize("value", [make_id(1, 1), make_id(7, 42), MAX_ID])
def test_validate_id_accepts_decimal_strings(value):
    result = validate_id(str(value))
    assert result == value
    assert type(result) is int


@pytest.mark.parametrize("value", [True, False])
def test_validate_id_rejects_bools(value):
    with pytest.raises(TypeError, match=r"^id"):
        validate_id(value)


@pytest.mark.parametrize("value", [4194305.0, None, b"4194305", [4194305]])
def test_validate_id_rejects_non_integers(value):
    with pytest.raises(TypeError, match=r"^id"):
        validate_id(value)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        -make_id(1, 1),
        MAX_ID + 1,
        2**53,
        2**64,
        1,  # block 0
        MAX_SEQUENCE,  # block 0
        make_id(1, 1) - 1,  # sequence 0
        make_id(5, 1) & ~MAX_SEQUENCE,  # sequence 0
    ],
)
def test_validate_id_rejects_out_of_range_ints(value):
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(value)


@pytest.mark.parametrize(
    "value", ["", "abc", "-4194305", "+4194305", " 4194305", "4194305 ", "4194305.0", "0x400001", "0"]
)
def test_validate_id_rejects_non_digit_or_invalid_strings(value):
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(value)


def test_validate_id_names_the_given_argument():
    with pytest.raises(ValueError, match=r"^websocket_id"):
        validate_id(0, "websocket_id")
    with pytest.raises(TypeError, match=r"^websocket_id"):
        validate_id(True, "websocket_id")


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "\u0661\u0662\u0663"])
def test_validate_id_error_names_argument_for_odd_digit_strings(value):
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(value)


@given(st.integers())
def test_property_validate_id_accepts_exactly_block_and_sequence_nonzero_ids(value):
    valid = 0 < value <= MAX_ID and value >> SEQUENCE_BITS != 0 and value & MAX_SEQUENCE != 0
    if valid:
        assert validate_id(value) == value
    else:
        with pytest.raises(ValueError):
            validate_id(value)
