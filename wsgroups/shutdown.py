"""Shutting a server process down cleanly: every socket closed with 1001 and its
disconnect handler run before the server stops, on SIGINT, SIGTERM or ASGI lifespan.

Before its sockets close, the process reads its channel to the end: what other processes
sent to its sockets before the signal (sends by ID, broadcasts) is delivered ahead of the
close frame, not dropped with the socket. That read takes at most ``SHUTDOWN_TIMEOUT``.

A socket whose close has not reached its disconnect handler within ``SHUTDOWN_TIMEOUT``
(thousands of clients answering the close at once on a busy machine) is handed to the
reaper instead: it is marked reaped here, so this process never runs its handler, and the
process leaves without recording its stop, so a live process reaps it after
``PROCESS_TIMEOUT`` and runs the handler of every socket row still open — once.

The server's own SIGINT/SIGTERM handlers (daphne's reactor, uvicorn's) are chained:
they run once our sockets are closed, or at once on a second signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any

from . import ops
from .codes import Closing, close_for
from .conf import conf
from .outbox import SocketState
from .runtime import Runtime
from .transport import Transport

__all__ = ["install_signal_handlers", "read_inbox_to_end", "shutdown"]

logger = logging.getLogger("wsgroups")


def install_signal_handlers(runtime: Runtime) -> None:
    """Shut ``runtime`` down on SIGINT and SIGTERM, then let the server's handlers run (once)."""
    if runtime.signals_installed or threading.current_thread() is not threading.main_thread():
        return
    runtime.signals_installed = True
    previous: dict[int, Any] = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def chain(signum: int, frame: FrameType | None) -> None:
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
            signal.raise_signal(signum)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if runtime.shutting_down:
            chain(signum, frame)
            return
        runtime.shutting_down = True
        task = runtime.loop.create_task(shutdown(runtime))
        task.add_done_callback(lambda _: chain(signum, None))

    for signum in previous:
        signal.signal(signum, on_signal)


async def read_inbox_to_end(transport: Transport, timeout: float) -> bool:
    """Apply every message other processes put in this process's channel before now: a
    mark sent to the channel itself is read after them. False if it did not come back
    within ``timeout`` (the layer away, or a backlog longer than that)."""
    token, future = transport.future()

    async def mark_comes_back() -> bool:
        if not await transport.send_message(transport.channel_name, {"type": ops.MARK_TYPE, "token": token}):
            return False
        return bool(await future)

    try:
        return await asyncio.wait_for(mark_comes_back(), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        return False
    finally:
        transport.discard(token)


async def shutdown(runtime: Runtime) -> None:
    """Deliver what other processes sent to this one's sockets before the signal, close all
    sockets with 1001, wait (bounded) for their disconnect handlers, leave the cluster."""
    runtime.shutting_down = True
    transport = runtime.transport
    if transport is not None and transport.channel_name and len(runtime.table):
        if not await read_inbox_to_end(transport, conf.SHUTDOWN_TIMEOUT):
            logger.warning(
                "wsgroups: messages sent to this process before its shutdown may not all have been "
                "read within %.1fs; its sockets are closed now",
                conf.SHUTDOWN_TIMEOUT,
            )
    socks = runtime.table.close_all(*close_for(Closing.SHUTDOWN))
    handed_off: list[int] = []
    if socks:
        waits = [asyncio.ensure_future(sock.closed.wait()) for sock in socks]
        _, pending = await asyncio.wait(waits, timeout=conf.SHUTDOWN_TIMEOUT)
        for waiter in pending:
            waiter.cancel()
        if pending:
            logger.warning("%d sockets did not finish closing within %.1fs", len(pending), conf.SHUTDOWN_TIMEOUT)
        for sock, waiter in zip(socks, waits, strict=True):
            # Not CLOSED: its handler has not started and its registry row is still open.
            if waiter in pending and sock.state is not SocketState.CLOSED:
                sock.reaped = True
                handed_off.append(sock.id)
    if handed_off:
        logger.warning(
            "wsgroups: %d sockets are left to the process that reaps this one, which runs their disconnect handlers",
            len(handed_off),
        )
    await runtime.leave(stopped=not handed_off)
    logger.info("wsgroups: closed %d sockets for shutdown", len(socks))
