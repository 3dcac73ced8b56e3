"""Running a group's handlers: in the server process (``HANDLER_MODE = "inline"``) or in a
``manage.py runworker wsgroups`` process (``"worker"``), and the disconnect handler of
sockets whose process died.

Sync handlers run in the runtime's handler threads (ORM-safe), async ones on the loop;
``WebSocket.current`` is the socket while a handler runs. An exception is logged and
reported as False, so the caller closes the socket with 1011. In worker mode the
server waits for the worker's answer before reading the socket's next frame, so calls
for one socket stay one at a time and in order, whichever worker takes them.

:func:`handler_socket` is the one place that builds the :class:`WebSocket` a handler gets.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from . import ops
from .conf import conf
from .exceptions import TransportError
from .handlers import Handler, handle
from .runtime import Runtime
from .transport import WORKER_CHANNEL
from .websocket import WebSocket, current_socket

__all__ = ["dispatch", "handle_for_server", "handler_socket", "run_disconnect", "run_handler"]

logger = logging.getLogger("wsgroups")


def handler_socket(socket_id: int, group: str, session_key: str | None) -> WebSocket:
    """The :class:`WebSocket` a handler of ``group`` gets for ``socket_id``."""
    return WebSocket.restore(socket_id, group, session_key or None)


def _run_sync(func: Any, *args: Any) -> Any:
    close_old_connections()
    try:
        return func(*args)
    finally:
        close_old_connections()


async def run_handler(runtime: Runtime, handler: Handler, ws: WebSocket, *args: Any) -> bool:
    """Run one handler here with ``WebSocket.current`` set; log and return False if it raised."""
    token = current_socket.set(ws)
    started = perf_counter()
    try:
        if handler.is_async:
            await handler.func(*args, ws)
        else:
            await sync_to_async(_run_sync, thread_sensitive=False, executor=runtime.executor)(handler.func, *args, ws)
        return True
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception(
            "Handler %s.%s failed on WebSocket %s", handler.func.__module__, handler.func.__qualname__, ws.id
        )
        return False
    finally:
        runtime.handler_times.observe(perf_counter() - started)
        current_socket.reset(token)


async def dispatch(runtime: Runtime, handler: Handler, kind: str, ws: WebSocket, payload: Any = None) -> bool:
    """Run ``ws``'s group's ``kind`` handler ("text", "binary" or "disconnect"; ``payload``
    for data handlers) where ``HANDLER_MODE`` says; False if it raised."""
    args = () if kind == "disconnect" else (payload,)
    if conf.HANDLER_MODE == "worker" and runtime.transport is not None and runtime.kind == "server":
        return await _on_worker(runtime, kind, ws, payload)
    return await run_handler(runtime, handler, ws, *args)


async def _on_worker(runtime: Runtime, kind: str, ws: WebSocket, payload: Any) -> bool:
    """Hand the call to a worker and wait for its answer."""
    transport = runtime.transport
    assert transport is not None
    token, future = transport.future()
    group = ws.group or ""
    try:
        transport.queue(WORKER_CHANNEL, ops.Handle(group, kind, ws.id, payload, ws.session_key_hint(), token))
        while True:
            done, _ = await asyncio.wait({future}, timeout=conf.QUERY_TIMEOUT)
            if done:
                return bool(future.result())
            workers = [p for p in (await runtime.directory.live()).values() if p.kind == "worker"]
            if not workers:
                logger.error("wsgroups: HANDLER_MODE is 'worker' but no 'runworker wsgroups' process is alive")
                return False
    except TransportError as exc:
        logger.error("wsgroups: the %s handler of WebSocket %s could not reach a worker: %s", kind, ws.id, exc)
        return False
    finally:
        transport.discard(token)


async def handle_for_server(runtime: Runtime, op: ops.Handle, reply_to: str) -> None:
    """In a worker: run the handler a server asked for, then answer behind its sends."""
    transport = runtime.transport
    if transport is not None and not await transport.claim(f"{reply_to}:{op.token}"):
        return  # a second delivery of a call another worker took
    ws = handler_socket(op.socket_id, op.group, op.session_key)
    if op.kind == "disconnect":
        handler = handle.disconnect_handler(op.group)
        args: tuple[Any, ...] = ()
    else:
        handler = handle.resolve(op.group, op.kind == "text").handler
        args = (op.payload,)
    ok = handler is None or await run_handler(runtime, handler, ws, *args)
    if transport is not None and reply_to:
        transport.queue(reply_to, ops.Reply(op.token, ok))


async def run_disconnect(runtime: Runtime, socket_id: int, group: str, session_key: str | None) -> None:
    """Run ``group``'s disconnect handler, if it has one, for a socket that ended."""
    handler = handle.disconnect_handler(group)
    if handler is not None:
        await dispatch(runtime, handler, "disconnect", handler_socket(socket_id, group, session_key))
