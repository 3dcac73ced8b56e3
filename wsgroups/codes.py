"""Close codes and send flags (RFC 6455, section 7.4; Starcounter's ConnectionFlags)."""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "ConnectionFlags", "is_sendable_close_code"]


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
