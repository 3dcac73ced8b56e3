"""The wire format of the operations between processes (wsgroups.ops)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgroups import ops

# --- strategies -----------------------------------------------------------------------

ids = st.integers(min_value=1, max_value=2**53 - 1)
tokens = st.integers(min_value=0, max_value=2**62)
codes = st.integers(min_value=1000, max_value=4999)
names = st.text(max_size=30)
payloads = st.one_of(st.text(max_size=200), st.binary(max_size=200))
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**62), max_value=2**62), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=10,
)

any_op = st.one_of(
    st.builds(ops.Send, ids, payloads, st.integers(min_value=0, max_value=3)),
    st.builds(ops.Close, ids, codes, names),
    st.builds(ops.Broadcast, names, payloads, st.lists(ids, max_size=5), tokens),
    st.builds(ops.GroupClose, names, codes, names, tokens),
    st.builds(ops.Alive, st.lists(ids, max_size=5), tokens),
    st.builds(ops.Members, names, tokens),
    st.builds(ops.Join, ids, names, json_like, tokens),
    st.builds(ops.Leave, ids, names, tokens),
    st.builds(ops.Rooms, ids, tokens),
    st.builds(ops.RoomBroadcast, names, payloads, st.lists(ids, max_size=5), tokens),
    st.builds(ops.RoomClose, names, codes, names, tokens),
    st.builds(ops.RoomMembers, names, tokens),
    st.builds(ops.RoomPresence, names, tokens),
    st.builds(ops.RoomCounts, tokens),
    st.builds(
        ops.Handle,
        names,
        st.sampled_from(["text", "binary", "disconnect"]),
        ids,
        st.one_of(st.none(), payloads),
        st.one_of(st.none(), st.text(max_size=40)),
        tokens,
    ),
    st.builds(ops.Reply, tokens, json_like),
)

EXAMPLES = [
    ops.Send(5, "hi", 1),
    ops.Send(5, b"\x00\xff"),
    ops.Close(6, 1000, "bye"),
    ops.Broadcast("chat", "hello", [1, 2], 7),
    ops.GroupClose("chat", 1001, "going", 8),
    ops.Alive([1, 2, 3], 9),
    ops.Members("chat", 10),
    ops.Join(5, "room:1", {"nick": "ann"}, 14),
    ops.Join(5, "room:1", None),
    ops.Leave(5, "room:1", 15),
    ops.Rooms(5, 16),
    ops.RoomBroadcast("room:1", b"\x01", [5], 17),
    ops.RoomClose("room:1", 4000, "closed", 18),
    ops.RoomMembers("room:1", 19),
    ops.RoomPresence("room:1", 20),
    ops.RoomCounts(21),
    ops.Handle("chat", "text", 5, "msg", "sess", 11),
    ops.Handle("chat", "disconnect", 5, None, None, 12),
    ops.Handle("chat", "disconnect", 5, None, None, 12, ["lobby", "x"]),
    ops.Reply(13, True),
]


# --- encode / decode ------------------------------------------------------------------


def test_a_handle_without_rooms_travels_with_the_fields_of_the_previous_version():
    assert ops.encode(ops.Handle("chat", "disconnect", 5, None, None, 12)) == [
        "h",
        "chat",
        "disconnect",
        5,
        None,
        None,
        12,
    ]
    assert ops.encode(ops.Handle("chat", "disconnect", 5, None, None, 12, ["x"]))[-1] == ["x"]


def test_examples_cover_every_op_type():
    assert {type(op) for op in EXAMPLES} == {ops.Send, ops.Close, *ops.ANSWERED, ops.Reply}


@pytest.mark.parametrize("op", EXAMPLES, ids=lambda op: type(op).__name__)
def test_round_trip_of_every_op_type(op):
    raw = ops.encode(op)
    assert isinstance(raw, list)
    omitted = isinstance(op, ops.Handle) and op.rooms is None  # see the test below
    assert isinstance(raw[0], str) and len(raw) == len(op) + 1 - omitted
    decoded = ops.decode(raw)
    assert type(decoded) is type(op)
    assert decoded == op


def test_tags_are_distinct_per_type():
    by_type = {type(op): ops.encode(op)[0] for op in EXAMPLES}
    assert len(set(by_type.values())) == len(by_type)


def test_decode_accepts_a_tuple_and_fills_defaults():
    assert ops.decode(("s", 3, "x")) == ops.Send(3, "x", 0)
    assert ops.decode(["m", "chat"]) == ops.Members("chat", 0)


@given(any_op)
def test_property_round_trip(op):
    decoded = ops.decode(ops.encode(op))
    assert decoded == op
    assert type(decoded) is type(op)
    payload = getattr(op, "payload", None)
    assert type(getattr(decoded, "payload", None)) is type(payload)  # bytes stay bytes, str stays str


@given(any_op)
def test_property_round_trip_through_msgpack(op):
    """What channels_redis does to a message: tuples become lists, bytes stay bytes."""
    wire = msgpack.unpackb(msgpack.packb(ops.encode(op)))
    decoded = ops.decode(wire)
    assert decoded == op
    if isinstance(op, (ops.Send, ops.Broadcast, ops.Handle)):
        assert type(decoded.payload) is type(op.payload)


# --- decode errors --------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["s", b"s", 5, None, {"s": 1}, [], ()])
def test_decode_refuses_what_is_not_a_list(raw):
    with pytest.raises(ValueError, match="not an operation"):
        ops.decode(raw)


@pytest.mark.parametrize("raw", [["z", 1], ["", 1], ["send", 1, "x"], [5, 1, "x"], [None]])
def test_decode_refuses_an_unknown_tag(raw):
    with pytest.raises(ValueError, match="unknown operation") as info:
        ops.decode(raw)
    assert repr(raw[0])[:40] in str(info.value)


@pytest.mark.parametrize(
    ("raw", "count"),
    [(["c", 1], 1), (["a"], 0), (["s", 1, "x", 0, 9], 4), (["r", 1, 2, 3], 3), (["h", "g", "text"], 2)],
)
def test_decode_refuses_a_wrong_field_count(raw, count):
    with pytest.raises(ValueError, match=f"operation {raw[0]!r} has {count} fields"):
        ops.decode(raw)


def test_decode_error_for_a_long_value_is_cut_short():
    with pytest.raises(ValueError) as info:
        ops.decode("x" * 10_000)
    assert len(str(info.value)) < 200


# --- empty_answer and size ------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        (ops.Broadcast("chat", "x", []), 0),
        (ops.GroupClose("chat", 1000, ""), 0),
        (ops.Alive([1, 2]), []),
        (ops.Members("chat"), []),
        (ops.Join(1, "r", None), False),
        (ops.Leave(1, "r"), False),
        (ops.Rooms(1), []),
        (ops.RoomBroadcast("r", "x", []), 0),
        (ops.RoomClose("r", 1000, ""), 0),
        (ops.RoomMembers("r"), []),
        (ops.RoomPresence("r"), []),
        (ops.RoomCounts(), []),
    ],
)
def test_empty_answer_of_each_query(query, answer):
    result = ops.empty_answer(query)
    assert result == answer
    assert type(result) is type(answer)


def test_every_query_type_has_its_empty_answer_tested():
    assert set(ops.QUERIES) == {
        ops.Broadcast,
        ops.GroupClose,
        ops.Alive,
        ops.Members,
        ops.Join,
        ops.Leave,
        ops.Rooms,
        ops.RoomBroadcast,
        ops.RoomClose,
        ops.RoomMembers,
        ops.RoomPresence,
        ops.RoomCounts,
    }


def test_empty_answers_are_fresh_lists():
    first = ops.empty_answer(ops.Members("chat"))
    first.append(1)
    assert ops.empty_answer(ops.Members("chat")) == []


def test_size_counts_str_and_bytes_fields_over_a_fixed_overhead():
    assert ops.size(ops.Send(1, "")) == 16
    assert ops.size(ops.Send(1, "abc")) == 19
    assert ops.size(ops.Send(1, b"\x00" * 100)) == 116
    assert ops.size(ops.Close(1, 1000, "bye")) == 19
    assert ops.size(ops.Broadcast("chat", "hello", [1, 2, 3])) == 16 + 4 + 5
    assert ops.size(ops.Handle("g", "text", 1, "xy", "sess")) == 16 + 1 + 4 + 2 + 4
    assert ops.size(ops.Handle("g", "disconnect", 1, None, None)) == 16 + 1 + 10


@given(any_op)
def test_property_size_grows_with_the_payload(op):
    assert ops.size(op) >= 16
    if isinstance(op, ops.Send):
        assert ops.size(op._replace(payload=op.payload * 2)) == ops.size(op) + len(op.payload)
