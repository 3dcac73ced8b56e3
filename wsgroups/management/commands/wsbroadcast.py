"""``manage.py wsbroadcast``: send every subscribed socket a message each interval."""

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
        progress = self.stdout.isatty()
        try:
            while not stopping:
                began = time.monotonic()
                try:
                    result = broadcaster.tick()
                except TransportError as exc:
                    logger.error("wsbroadcast: tick skipped: %s", exc)
                    if options["once"]:
                        raise CommandError(str(exc)) from None
                else:
                    if not result.leading:
                        logger.info("wsbroadcast: another broadcaster leads; standing by")
                    else:
                        logger.info("wsbroadcast: %s", result.line())
                        if progress:
                            self.stdout.write(f"\r{result.line()}   ", ending="")
                            self.stdout.flush()
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
