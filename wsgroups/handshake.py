"""Pure rules of the opening handshake: what may go on a 101, a rejection, or a close.

Nothing here touches a socket; the ASGI shell and the server adapters call these
functions and send what they return.
"""

from __future__ import annotations

import http
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.http.request import split_domain_port, validate_host

from .codes import MAX_CLOSE_REASON_BYTES, is_sendable_close_code

__all__ = [
    "WEBSOCKET_VERSION",
    "accept_headers",
    "check_close",
    "check_header",
    "check_header_bytes",
    "check_subprotocol",
    "django_allowed_hosts",
    "head_refusal",
    "origin_allowed",
    "rejection_headers",
    "serialize_response",
]

#: The one WebSocket protocol version served (RFC 6455); the adapters refuse others with 426.
WEBSOCKET_VERSION = "13"

# RFC 9110 token characters: a header name is one token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FORBIDDEN_VALUE_CHARS = ("\r", "\n", "\x00")
_FORBIDDEN_BYTES = (b"\r", b"\n", b"\x00")
# Other control characters are not allowed in a field value either (RFC 9110 5.5: only
# visible characters, space and tab); some servers hang or split lines on them.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The handshake headers the server computes itself; letting a view set them would
# break the handshake or smuggle a second response.
_RESERVED = frozenset({"upgrade", "connection", "content-length", "transfer-encoding"})


def check_header(name: object, value: object, *, argument: str = "headers") -> tuple[str, str]:
    """Validate one extra header for the 101 and return it as ``(name, value)``.

    Raises :class:`ValueError` naming ``argument`` for reserved names, names that are
    not tokens, CR, LF or NUL anywhere, other control characters (tab aside) and
    non-ASCII characters in the value; :class:`TypeError` for non-strings.
    """
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"{argument}: header names and values must be str, got {name!r}: {value!r}")
    for text, part in ((name, "name"), (value, "value")):
        if any(ch in text for ch in _FORBIDDEN_VALUE_CHARS):
            raise ValueError(f"{argument}: header {part} {text!r} contains CR, LF or NUL")
    if not _TOKEN.match(name):
        raise ValueError(f"{argument}: header name {name!r} is not a valid HTTP token")
    if _CONTROL.search(value):
        raise ValueError(f"{argument}: header value {value!r} contains a control character")
    lowered = name.lower()
    if lowered in _RESERVED or lowered.startswith("sec-websocket-"):
        raise ValueError(f"{argument}: header {name!r} is set by the handshake and cannot be overridden")
    if not value.isascii():
        # daphne (autobahn) writes 101 headers as UTF-8 and uvicorn as ISO-8859-1: only
        # ASCII reaches the client as it was given.
        raise ValueError(f"{argument}: header value {value!r} is not ASCII")
    return name, value


def check_cookie(cookie: object) -> str:
    """Validate one ``Set-Cookie`` value such as ``"MyCookie1=123; Path=/"``."""
    if not isinstance(cookie, str):
        raise TypeError(f"cookies: each cookie must be a str like 'name=value', got {cookie!r}")
    if any(ch in cookie for ch in _FORBIDDEN_VALUE_CHARS):
        raise ValueError(f"cookies: cookie {cookie!r} contains CR, LF or NUL")
    if _CONTROL.search(cookie):
        raise ValueError(f"cookies: cookie {cookie!r} contains a control character")
    name, sep, _ = cookie.partition("=")
    if not sep or not _TOKEN.match(name.strip()):
        raise ValueError(f"cookies: {cookie!r} is not of the form 'name=value[; attributes]'")
    if not cookie.isascii():  # as for header values; RFC 6265 cookies are ASCII anyway
        raise ValueError(f"cookies: cookie {cookie!r} is not ASCII")
    return cookie


def accept_headers(cookies: Iterable[str] | None, headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    """Validate ``cookies`` and ``headers`` and return them as ASGI header pairs."""
    if isinstance(cookies, str):
        raise TypeError("cookies must be a list of 'name=value' strings, not one string")
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError("headers must be a mapping of header name to value")
    pairs: list[tuple[bytes, bytes]] = []
    for name, value in (headers or {}).items():
        name, value = check_header(name, value)
        if name.lower() == "set-cookie":
            raise ValueError("headers: pass cookies with cookies=, not a Set-Cookie header")
        pairs.append((name.encode("latin-1"), value.encode("latin-1")))
    for cookie in cookies or ():
        pairs.append((b"Set-Cookie", check_cookie(cookie).encode("latin-1")))
    return pairs


def check_subprotocol(chosen: str | None, offered: Sequence[str]) -> str | None:
    """Return ``chosen`` if the client offered it; ``None`` stays ``None``."""
    if chosen is None:
        return None
    if chosen not in offered:
        raise ValueError(f"subprotocol {chosen!r} was not offered by the client (offered: {list(offered)})")
    return chosen


def check_close(code: object, reason: object) -> tuple[int, str]:
    """Validate a close code and reason for the wire; return them normalised."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"code must be an int close code, got {code!r}")
    if not is_sendable_close_code(code):
        raise ValueError(
            f"code {code} cannot be sent in a close frame (use 1000-1003, 1007-1009, 1011-1014 or 3000-4999)"
        )
    if reason is None:
        return int(code), ""
    if not isinstance(reason, str):
        raise TypeError(f"message must be a str close reason, got {type(reason).__name__}")
    size = len(reason.encode("utf-8"))
    if size > MAX_CLOSE_REASON_BYTES:
        raise ValueError(f"message is {size} UTF-8 bytes; a close reason holds at most {MAX_CLOSE_REASON_BYTES}")
    return int(code), reason


#: The hosts Django accepts when DEBUG is on and ALLOWED_HOSTS is empty (as ``HttpRequest.get_host``).
DEBUG_ALLOWED_HOSTS = (".localhost", "127.0.0.1", "[::1]")


def django_allowed_hosts(allowed_hosts: Sequence[str], debug: bool) -> list[str]:
    """The hosts Django itself accepts requests for, so that a page it serves may upgrade."""
    if debug and not allowed_hosts:
        return list(DEBUG_ALLOWED_HOSTS)
    return list(allowed_hosts)


def origin_allowed(origin: str | None, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]) -> bool:
    """Whether an upgrade with this ``Origin`` header may proceed.

    Clients that send no Origin (non-browser clients) are allowed: the check exists to
    stop other web pages from using a visitor's cookies. ``"null"`` origins are refused.
    """
    if origin is None:
        return True
    if "*" in allowed_origins or origin in allowed_origins:
        return True
    try:
        parsed = urlsplit(origin)
        hostname = parsed.hostname
    except ValueError:  # client input urlsplit cannot parse, such as "http://["
        return False
    if parsed.scheme not in ("http", "https") or not hostname:
        return False
    host, _ = split_domain_port(parsed.netloc)
    return bool(host) and validate_host(host, list(allowed_hosts))


def rejection_headers(
    response_items: Iterable[tuple[str, str]], cookies: Iterable[Any], body_length: int
) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs for a rejection: the view's headers, its cookies, one Content-Length."""
    pairs = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response_items
        if name.lower() not in ("content-length", "connection")
    ]
    pairs.extend((b"Set-Cookie", morsel.output(header="").strip().encode("latin-1")) for morsel in cookies)
    pairs.append((b"Content-Length", str(body_length).encode("ascii")))
    pairs.append((b"Connection", b"close"))
    return pairs


def check_header_bytes(part: object, what: str) -> bytes:
    """``part`` of a raw response head (a name, value or reason phrase), free of CR, LF and NUL."""
    if not isinstance(part, bytes):
        raise ValueError(f"{what} must be bytes, got {type(part).__name__}")
    if any(ch in part for ch in _FORBIDDEN_BYTES):
        raise ValueError(f"{what} {part!r} contains CR, LF or NUL")
    return part


def serialize_response(status: int, headers: list[tuple[bytes, bytes]], reason: str | None, body: bytes) -> bytes:
    """The raw HTTP/1.1 response for a refused upgrade; raises ValueError on header injection."""
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError(f"status must be a final HTTP status (200-599), got {status!r}")
    if not reason:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    phrase = check_header_bytes(reason.encode("latin-1", "replace"), "reason phrase")
    lines = [b"HTTP/1.1 %d %s" % (status, phrase)]
    has_length = False
    for name, value in headers:
        name, value = check_header_bytes(name, "header name"), check_header_bytes(value, "header value")
        has_length = has_length or name.lower() == b"content-length"
        lines.append(name + b": " + value)
    if not has_length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def head_refusal(status: int) -> bytes:
    """The raw response that ends a connection whose request head never became a request
    (408 for a head too slow, 431 for one too large), as the server adapters send it."""
    phrase = http.HTTPStatus(status).phrase
    headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Connection", b"close")]
    return serialize_response(status, headers, None, f"{phrase}.\n".encode("ascii"))
