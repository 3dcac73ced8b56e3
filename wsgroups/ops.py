"""The operations one wsgroups process sends another over the channel layer: the wire format.

Each operation is a small immutable record. On the wire a batch is one channel-layer
message ``{"type": "wsgroups.ops", "ops": [...], "reply_to": channel, "number": n}``
whose ops are lists ``[tag, *fields]`` (:func:`encode` / :func:`decode`) and whose
``number`` counts the sender's batches (a copy delivered twice is dropped); answers
come back as ``{"type": "wsgroups.reply", "results": [[token, result], ...]}``.

Operations that expect an answer (:data:`ANSWERED`) carry a ``token`` as their last
field. When the destination of a query (:data:`QUERIES`) is gone, the sender resolves it
with its empty answer (:func:`empty_answer`): a dead process holds no sockets. A
:class:`Handle` for a worker that is gone fails instead.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, NamedTuple, TypeAlias

__all__ = [
    "ANSWERED",
    "BATCH_TYPE",
    "QUERIES",
    "RECENT_BATCHES",
    "RECENT_SENDERS",
    "REPLY_TYPE",
    "Alive",
    "Broadcast",
    "Close",
    "GroupClose",
    "Handle",
    "Join",
    "Leave",
    "Members",
    "Op",
    "Query",
    "RecentBatches",
    "Reply",
    "RoomBroadcast",
    "RoomClose",
    "RoomCounts",
    "RoomMembers",
    "RoomPresence",
    "Rooms",
    "Send",
    "decode",
    "empty_answer",
    "encode",
    "size",
]

#: ``type`` of a channel-layer message carrying a batch of ops, and of one carrying answers.
BATCH_TYPE = "wsgroups.ops"
REPLY_TYPE = "wsgroups.reply"
#: ``type`` of a mark a process sends to its own channel: it is read after every message
#: put there before it (``token``: the future it resolves).
MARK_TYPE = "wsgroups.mark"


class Send(NamedTuple):
    """Send a frame to one socket (text for str, binary for bytes), with ConnectionFlags."""

    socket_id: int
    payload: str | bytes
    flags: int = 0


class Close(NamedTuple):
    """Close one socket."""

    socket_id: int
    code: int
    reason: str


class Broadcast(NamedTuple):
    """Send a frame to every open socket of a group but ``excluded``; answers how many took it."""

    group: str
    payload: str | bytes
    excluded: list[int]
    token: int = 0


class GroupClose(NamedTuple):
    """Close every open socket of a group; answers how many were closed."""

    group: str
    code: int
    reason: str
    token: int = 0


class Alive(NamedTuple):
    """Answers which of ``socket_ids`` are open in the destination."""

    socket_ids: list[int]
    token: int = 0


class Members(NamedTuple):
    """Answers the IDs of a group's open sockets in the destination."""

    group: str
    token: int = 0


class Join(NamedTuple):
    """Put a socket in a room with ``meta``; answers False if the socket is not open."""

    socket_id: int
    room: str
    meta: Any
    token: int = 0


class Leave(NamedTuple):
    """Take a socket out of a room; answers False if it was not a member."""

    socket_id: int
    room: str
    token: int = 0


class Rooms(NamedTuple):
    """Answers the names of the rooms a socket is in."""

    socket_id: int
    token: int = 0


class RoomBroadcast(NamedTuple):
    """Send a frame to every open socket of a room but ``excluded``; answers how many took it."""

    room: str
    payload: str | bytes
    excluded: list[int]
    token: int = 0


class RoomClose(NamedTuple):
    """Close every open socket of a room; answers how many were closed."""

    room: str
    code: int
    reason: str
    token: int = 0


class RoomMembers(NamedTuple):
    """Answers the IDs of a room's open sockets in the destination."""

    room: str
    token: int = 0


class RoomPresence(NamedTuple):
    """Answers ``[socket ID, meta]`` of a room's open sockets in the destination."""

    room: str
    token: int = 0


class RoomCounts(NamedTuple):
    """Answers ``[room, open members]`` of every room with open members in the destination."""

    token: int = 0


class Handle(NamedTuple):
    """Run a group's handler in a worker (``HANDLER_MODE = "worker"``); answers True if it succeeded.

    ``kind`` is "text", "binary" or "disconnect"; ``payload`` is None for "disconnect";
    ``rooms`` are the rooms the registry recorded for a socket whose process died (what
    ``ws.rooms()`` lists in its disconnect handler), None otherwise.
    """

    group: str
    kind: str
    socket_id: int
    payload: str | bytes | None
    session_key: str | None
    token: int = 0
    rooms: list[str] | None = None


class Reply(NamedTuple):
    """An answer that travels behind the sender's earlier ops (a worker's handler result),
    so it resolves only after they were applied."""

    token: int
    result: Any


Op: TypeAlias = (
    Send
    | Close
    | Broadcast
    | GroupClose
    | Alive
    | Members
    | Join
    | Leave
    | Rooms
    | RoomBroadcast
    | RoomClose
    | RoomMembers
    | RoomPresence
    | RoomCounts
    | Handle
    | Reply
)
#: Ops that ask the destination for an answer: they carry a token.
Query: TypeAlias = (
    Broadcast
    | GroupClose
    | Alive
    | Members
    | Join
    | Leave
    | Rooms
    | RoomBroadcast
    | RoomClose
    | RoomMembers
    | RoomPresence
    | RoomCounts
)
QUERIES = (
    Broadcast,
    GroupClose,
    Alive,
    Members,
    Join,
    Leave,
    Rooms,
    RoomBroadcast,
    RoomClose,
    RoomMembers,
    RoomPresence,
    RoomCounts,
)
ANSWERED = (*QUERIES, Handle)

_TAGS: dict[type[Any], str] = {
    Send: "s",
    Close: "c",
    Broadcast: "b",
    GroupClose: "g",
    Alive: "a",
    Members: "m",
    Join: "j",
    Leave: "l",
    Rooms: "o",
    RoomBroadcast: "B",
    RoomClose: "C",
    RoomMembers: "M",
    RoomPresence: "p",
    RoomCounts: "n",
    Handle: "h",
    Reply: "r",
}
_BY_TAG: dict[str, type[Any]] = {tag: kind for kind, tag in _TAGS.items()}


def encode(op: Op) -> list[Any]:
    """``op`` as it travels: ``[tag, *fields]`` (a ``Handle`` without ``rooms`` leaves them
    out, so that workers of the previous version still take it during a rollout)."""
    if isinstance(op, Handle) and op.rooms is None:
        return [_TAGS[Handle], *op[:-1]]
    return [_TAGS[type(op)], *op]


def decode(raw: object) -> Op:
    """The op a peer sent; ValueError for anything that is not one."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"not an operation: {raw!r:.80}")
    kind = _BY_TAG.get(raw[0]) if isinstance(raw[0], str) else None
    if kind is None:
        raise ValueError(f"unknown operation {raw[0]!r:.40}")
    try:
        op: Op = kind(*raw[1:])
    except TypeError:
        raise ValueError(f"operation {raw[0]!r} has {len(raw) - 1} fields") from None
    return op


def empty_answer(op: Query) -> Any:
    """The answer of a process that holds no sockets (the destination is gone)."""
    if isinstance(op, (Broadcast, GroupClose, RoomBroadcast, RoomClose)):
        return 0
    if isinstance(op, (Join, Leave)):
        return False
    return []


def size(op: Op) -> int:
    """About how many bytes ``op`` takes on the wire (for batch sizing)."""
    return 16 + sum(len(item) for item in op if isinstance(item, (str, bytes)))


#: Batch numbers remembered per sending process, and sending processes remembered, to
#: recognise a batch the layer delivers twice (see :class:`RecentBatches`).
RECENT_BATCHES = 256
RECENT_SENDERS = 1024


class RecentBatches:
    """The batches received lately, by sending process and batch number.

    When Redis fails mid-way (a primary killed, a failover), channels_redis can deliver a
    message twice: a send whose connection broke after the message was written is retried
    (:meth:`wsgroups.transport.Transport.send_message`), and a receive whose removal of its backup copy did
    not reach Redis puts that copy back in the queue (``RedisChannelLayer.receive_single``).
    Every batch carries its sender's running number, the same on each retry; a number seen
    lately from the same sender is such a copy. Copies come within a few batches, so a
    bounded memory (``RECENT_BATCHES`` numbers per sender, ``RECENT_SENDERS`` senders,
    least recently heard from forgotten first) is enough.
    """

    def __init__(self, per_sender: int = RECENT_BATCHES, senders: int = RECENT_SENDERS) -> None:
        self.per_sender, self.senders = per_sender, senders
        self._seen: OrderedDict[str, tuple[deque[int], set[int]]] = OrderedDict()

    def is_repeat(self, sender: str, number: int) -> bool:
        """Whether ``number`` from ``sender`` was seen before (it is remembered now)."""
        entry = self._seen.get(sender)
        if entry is None:
            entry = self._seen[sender] = (deque(), set())
            if len(self._seen) > self.senders:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(sender)
        order, numbers = entry
        if number in numbers:
            return True
        order.append(number)
        numbers.add(number)
        if len(order) > self.per_sender:
            numbers.discard(order.popleft())
        return False
