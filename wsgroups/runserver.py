"""Clean stops under ``manage.py runserver`` with its autoreloader (the default).

The autoreloader runs the server in a daemon thread of a child process, where no signal
handler can be installed, and its parent kills that child a quarter of a second after a
Ctrl-C. So the child closes its sockets (1001, disconnect handlers, the process recorded
as stopped) as its interpreter starts to exit, which it does on Ctrl-C, SIGTERM and every
reload alike, and the parent lets the first Ctrl-C wait for the child; a second one
stops it at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from types import FrameType

from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

from .conf import conf
from .runtime import at_exit, current_runtime
from .shutdown import shutdown

__all__ = ["install"]

logger = logging.getLogger("wsgroups")


def _autoreloading(argv: list[str]) -> bool:
    """Whether this process is ``manage.py runserver`` with the autoreloader on."""
    return len(argv) > 1 and argv[1] == "runserver" and "--noreload" not in argv


def install(argv: list[str] | None = None) -> None:
    """Called at app start: arrange the clean stop in the autoreloader's parent or child."""
    if not _autoreloading(sys.argv if argv is None else argv):
        return
    if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
        at_exit(close_sockets_at_exit)
    else:
        signal.signal(signal.SIGINT, _wait_for_child)


def close_sockets_at_exit() -> None:
    """In the serving child: shut the runtime down on its loop, which still runs."""
    runtime = current_runtime()
    if runtime is None or runtime.shutting_down or not runtime.loop.is_running():
        return
    future = asyncio.run_coroutine_threadsafe(shutdown(runtime), runtime.loop)
    try:
        future.result(conf.SHUTDOWN_TIMEOUT + 2)
    except Exception:
        logger.exception("wsgroups: the shutdown at exit failed")


def _wait_for_child(signum: int, frame: FrameType | None) -> None:
    """In the autoreloader's parent: let the child close its sockets, then exit with it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
