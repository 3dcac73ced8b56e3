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


# --- properties of the codec ------------------------------------------------------------

valid_ids = st.builds(make_id, blocks, sequences)


@given(valid_ids)
def test_property_split_then_make_gives_back_the_id(socket_id):
    assert make_id(*split_id(socket_id)) == socket_id
    assert validate_id(socket_id) == socket_id


@given(valid_ids, st.integers(min_value=0, max_value=16))
def test_property_decimal_strings_round_trip_with_leading_zeros_up_to_16_digits(socket_id, zeros):
    text = "0" * zeros + str(socket_id)
    if len(text) <= 16:
        result = validate_id(text)
        assert result == socket_id and type(result) is int
    else:
        with pytest.raises(ValueError, match=r"^id"):
            validate_id(text)


@given(st.text())
def test_property_strings_are_accepted_only_as_short_ascii_decimals_of_valid_ids(text):
    try:
        result = validate_id(text)
    except ValueError as exc:
        assert str(exc).startswith("id")
        return
    assert text.isascii() and text.isdigit() and len(text) <= 16
    assert result == int(text)
    assert 0 < result < 2**53


@given(st.text(st.characters(categories=["Nd"], exclude_characters="0123456789"), min_size=1, max_size=16))
def test_property_non_ascii_digits_are_never_accepted(text):
    # int() would read them ("١٢٣" is 123): an ID must not have two spellings.
    assert int(text) >= 0
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(text)


@given(st.text("0123456789", max_size=8), st.characters(categories=["Nd"], exclude_characters="0123456789"))
def test_property_one_non_ascii_digit_among_ascii_digits_is_refused(digits, odd):
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(digits + odd + str(make_id(1, 1)))


@given(st.integers(min_value=2**53))
def test_property_values_from_2_to_the_53_are_refused_as_ints_and_strings(value):
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(value)
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(str(value))


@given(st.integers(max_value=0))
def test_property_zero_and_negative_values_are_refused_as_ints_and_strings(value):
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(value)
    with pytest.raises(ValueError, match=r"^id"):
        validate_id(str(value))


@given(st.integers(min_value=0, max_value=MAX_ID))
def test_property_ids_with_block_or_sequence_zero_are_refused(value):
    block, sequence = split_id(value)
    if block == 0 or sequence == 0:
        with pytest.raises(ValueError, match=r"^id"):
            validate_id(value)
    else:
        assert validate_id(value) == make_id(block, sequence)
