"""Handler registration (``handle.websocket``) and the pure rules of dispatching frames.

Handlers live in a ``sockets.py`` module of any installed app, imported when Django
starts. Each group has at most one text handler, one binary handler and one disconnect
handler.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .codes import Closing, close_for
from .exceptions import HandlerError

__all__ = ["GroupHandlers", "HandlerRegistry", "Resolution", "handle"]

Kind = Literal["text", "binary"]
_KINDS = ("text", "binary")


@dataclass(frozen=True)
class Handler:
    """A registered function and whether it must run on the event loop."""

    func: Callable[..., Any]
    is_async: bool

    @classmethod
    def wrap(cls, func: Callable[..., Any]) -> Handler:
        if not callable(func):
            raise HandlerError(f"{func!r} is not callable")
        return cls(func, inspect.iscoroutinefunction(func))


@dataclass
class GroupHandlers:
    text: Handler | None = None
    binary: Handler | None = None
    disconnect: Handler | None = None


@dataclass(frozen=True)
class Resolution:
    """Outcome of looking up the handler for a frame: a handler, or why there is none."""

    handler: Handler | None
    missing_reason: str = ""


def _name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def kind_from_annotation(func: Callable[..., Any]) -> Kind:
    """``str`` → text, ``bytes`` → binary, from the annotation of the first parameter."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    if not params:
        raise HandlerError(f"handler {func.__qualname__} must take (message, ws)")
    try:
        hints = typing.get_type_hints(func)
        annotation: Any = hints.get(params[0].name, params[0].annotation)
    except Exception:  # unresolvable string annotations: fall back to their text
        annotation = params[0].annotation
    if annotation in (str, "str"):
        return "text"
    if annotation in (bytes, "bytes", bytearray, "bytearray"):
        return "binary"
    raise HandlerError(
        f"handler {func.__qualname__}: annotate its first parameter as str or bytes, "
        "or pass kind='text' or kind='binary'"
    )


@dataclass
class HandlerRegistry:
    """All registered handlers of this process, by group name."""

    groups: dict[str, GroupHandlers] = field(default_factory=dict)

    def _group(self, group: str) -> GroupHandlers:
        if not isinstance(group, str) or not group:
            raise HandlerError(f"group must be a non-empty str, got {group!r}")
        return self.groups.setdefault(group, GroupHandlers())

    def websocket(self, group: str, *, kind: Kind | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a data handler ``(message, ws)`` for ``group``.

        The kind (text or binary) comes from ``kind=`` or the first parameter's annotation.
        """
        if kind is not None and kind not in _KINDS:
            raise HandlerError(f"kind must be 'text' or 'binary', got {kind!r}")
        handlers = self._group(group)

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            resolved = kind or kind_from_annotation(func)
            current = getattr(handlers, resolved)
            if current is not None and current.func is not func:
                raise HandlerError(f"group {group!r} already has a {resolved} handler: {_name(current.func)}")
            setattr(handlers, resolved, Handler.wrap(func))
            return func

        return register

    def websocket_disconnect(self, group: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register the handler ``(ws)`` that runs once when a socket of ``group`` ends."""
        handlers = self._group(group)

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            current = handlers.disconnect
            if current is not None and current.func is not func:
                raise HandlerError(f"group {group!r} already has a disconnect handler: {_name(current.func)}")
            handlers.disconnect = Handler.wrap(func)
            return func

        return register

    def resolve(self, group: str, is_text: bool) -> Resolution:
        """The handler for a frame of this kind, or the reason to close with 1003."""
        handlers = self.groups.get(group)
        wanted = "text" if is_text else "binary"
        handler = getattr(handlers, wanted) if handlers else None
        if handler is not None:
            return Resolution(handler)
        return Resolution(None, close_for(Closing.MISSING_HANDLER, group=group, kind=wanted)[1])

    def disconnect_handler(self, group: str) -> Handler | None:
        handlers = self.groups.get(group)
        return handlers.disconnect if handlers else None


#: The process-wide registry; ``@handle.websocket(...)`` and ``@handle.websocket_disconnect(...)``.
handle = HandlerRegistry()
