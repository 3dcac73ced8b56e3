"""``manage.py wsbroadcast``: send every subscribed socket a message each interval.

The log gets a tick line (INFO) only when something changed: the first tick, counts that
differ from the previous tick's, or taking or losing the lead; every tick is logged at
DEBUG. On a TTY, a live progress line is rewritten in place each tick (``--no-progress``
turns it off, as ``manage.py demo`` does: its processes share one console).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from wsgroups.broadcaster import Broadcaster
from wsgroups.exceptions import TransportError

logger = logging.getLogger("wsgroups.broadcaster")


class Command(BaseCommand):
    help = (
        "Every --interval seconds, send each BroadcastSubscription's socket --message and count it; "
        "at --limit, disconnect it and delete the subscription."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks (default 1.0)")
        parser.add_argument("--limit", type=int, default=100, help="messages before disconnecting (default 100)")
        parser.add_argument(
            "--message", default="Broadcasting id: {id}", help="message template; {id} is the socket's ID"
        )
        parser.add_argument("--group", default=None, help="only sockets of this group")
        parser.add_argument("--once", action="store_true", help="run one tick and exit")
        parser.add_argument(
            "--no-progress", action="store_true", help="no live progress line, even when stdout is a terminal"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0:
            raise CommandError(f"--interval must be positive, got {options['interval']}")
        try:
            broadcaster = Broadcaster(options["limit"], options["message"], options["group"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        stopping: list[int] = []

        def stop(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        progress = self.stdout.isatty() and not options["no_progress"]
        was_leading: bool | None = None  # None before the first tick
        previous_counts: tuple[int, int, int] | None = None  # None before the first tick and after an error

        def show(line: str) -> None:
            self.stdout.write(f"\r\x1b[K{line}", ending="")
            self.stdout.flush()

        def log(level: int, message: str, *args: object) -> None:
            """Log, first clearing the progress line so the log line starts on a clean line."""
            if progress and logger.isEnabledFor(level):
                show("")
            logger.log(level, message, *args)

        try:
            while not stopping:
                began = time.monotonic()
                try:
                    result = broadcaster.tick()
                except TransportError as exc:
                    log(logging.ERROR, "wsbroadcast: tick skipped: %s", exc)
                    previous_counts = None  # the next tick that works is logged
                    if options["once"]:
                        raise CommandError(str(exc)) from None
                else:
                    counts = (result.sent, result.disconnected, result.pruned)
                    changed = result.leading != was_leading or counts != previous_counts
                    level = logging.INFO if changed else logging.DEBUG
                    if not result.leading:
                        log(level, "wsbroadcast: another broadcaster leads; standing by")
                    else:
                        prefix = "leading; " if was_leading is not True else ""
                        log(level, "wsbroadcast: %s%s", prefix, result.line())
                    was_leading, previous_counts = result.leading, counts
                    if progress:
                        show(result.line() if result.leading else "standing by: another broadcaster leads")
                if options["once"]:
                    break
                while not stopping and time.monotonic() - began < options["interval"]:
                    time.sleep(min(0.05, options["interval"]))
        finally:
            broadcaster.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if progress:
                self.stdout.write("")
        if stopping:
            logger.info("wsbroadcast: stopped by signal %d after finishing the tick", stopping[0])
        sys.stdout.flush()
