"""Close codes, send flags and the close decisions of the server (RFC 6455 section 7.4;
Starcounter's ConnectionFlags): which code and reason each situation that ends a socket gets."""

from __future__ import annotations

import enum

__all__ = [
    "ABNORMAL_CLOSURE",
    "CLOSE_DECISIONS",
    "MAX_CLOSE_REASON_BYTES",
    "NO_STATUS_RECEIVED",
    "CloseCode",
    "Closing",
    "ConnectionFlags",
    "close_for",
    "fit_reason",
    "is_sendable_close_code",
]


class CloseCode(enum.IntEnum):
    """Close codes an application may send, named as in Starcounter's ``WebSocketCloseCodes``."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    CANT_ACCEPT_DATA = 1003
    WRONG_DATA_TYPE = 1007
    POLICY_VIOLATED = 1008
    MESSAGE_TOO_BIG = 1009
    UNEXPECTED_CONDITION = 1011
    TRY_AGAIN_LATER = 1013


class ConnectionFlags(enum.IntFlag):
    """What to do with the connection around a send."""

    NO_SPECIAL_FLAGS = 0
    #: Send the frame, then close the socket normally.
    DISCONNECT_AFTER_SEND = 1
    #: Close the socket normally without sending the frame.
    DISCONNECT_IMMEDIATELY = 2


# 1004, 1005, 1006 and 1015 are reserved and must never appear in a close frame;
# 1010 is sent only by clients.
_SENDABLE_PROTOCOL_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1012, 1013, 1014})


def is_sendable_close_code(code: int) -> bool:
    """Whether a server may put ``code`` in a close frame."""
    return code in _SENDABLE_PROTOCOL_CODES or 3000 <= code <= 4999


#: A close frame holds at most 125 bytes of payload: a 2-byte code and the reason.
MAX_CLOSE_REASON_BYTES = 123

#: The code the registry records for a client's close frame that carried no code
#: (never sent: RFC 6455 7.1.5 reserves it).
NO_STATUS_RECEIVED = 1005

#: The code the registry records for a socket whose process died (never sent: RFC 6455
#: reserves 1006 for a connection that ended without a close frame).
ABNORMAL_CLOSURE = 1006


def fit_reason(reason: str) -> str:
    """Cut a server-made close reason to what a close frame holds, on a character boundary."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


class Closing(enum.Enum):
    """Why the server ends a socket. :func:`close_for` says which code and reason each gets."""

    MISSING_HANDLER = "missing_handler"
    HANDLER_ERROR = "handler_error"
    MESSAGE_TOO_BIG = "message_too_big"
    RATE_LIMITED = "rate_limited"
    OUTBOX_OVERFLOW = "outbox_overflow"
    GROUP_FULL = "group_full"
    UPGRADE_RESPONSE = "upgrade_response"
    SHUTDOWN = "shutdown"
    CLUSTER_LOST = "cluster_lost"
    PROCESS_DIED = "process_died"


#: The one table of server-made closes: situation → (code, reason template).
CLOSE_DECISIONS: dict[Closing, tuple[int, str]] = {
    Closing.MISSING_HANDLER: (CloseCode.CANT_ACCEPT_DATA, "group {group!r} has no {kind} handler"),
    Closing.HANDLER_ERROR: (CloseCode.UNEXPECTED_CONDITION, "server error in handler"),
    Closing.MESSAGE_TOO_BIG: (CloseCode.MESSAGE_TOO_BIG, "message of {size} bytes exceeds the limit of {limit}"),
    Closing.RATE_LIMITED: (CloseCode.POLICY_VIOLATED, "rate limit: more than {rate:g} messages per second"),
    Closing.OUTBOX_OVERFLOW: (CloseCode.TRY_AGAIN_LATER, "outgoing buffer full: client too slow"),
    Closing.GROUP_FULL: (CloseCode.TRY_AGAIN_LATER, "group {group!r} is at its limit of {limit} connections"),
    Closing.UPGRADE_RESPONSE: (CloseCode.UNEXPECTED_CONDITION, "upgrade view returned a response"),
    Closing.SHUTDOWN: (CloseCode.GOING_AWAY, "server shutting down"),
    Closing.CLUSTER_LOST: (CloseCode.TRY_AGAIN_LATER, "server lost contact with its cluster; reconnect"),
    Closing.PROCESS_DIED: (ABNORMAL_CLOSURE, "server process died"),
}


def close_for(situation: Closing, **details: object) -> tuple[int, str]:
    """The close code and reason (fitted to a close frame) for ``situation``; ``details``
    fill the reason template (``group``, ``kind``, ``size``, ``limit``, ``rate``)."""
    code, template = CLOSE_DECISIONS[situation]
    return int(code), fit_reason(template.format(**details))
