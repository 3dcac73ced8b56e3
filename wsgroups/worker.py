"""``manage.py runworker wsgroups`` as a member of the cluster from its start.

Channels' worker builds the application instance of a channel at the channel's first
message, so a worker that joined there would not heartbeat or reap until a server in
worker mode sent it a handler call — in inline mode, never. :class:`ClusterWorker` joins
(and installs the clean stop on SIGINT/SIGTERM) before it listens; :func:`install`, called
at app start, makes it the class Channels' ``runworker`` command runs.
"""

from __future__ import annotations

from channels.management.commands import runworker
from channels.worker import Worker

from .routing import start_member
from .transport import WORKER_CHANNEL

__all__ = ["ClusterWorker", "install"]


class ClusterWorker(Worker):  # type: ignore[misc]
    """Channels' worker that joins the cluster as a ``worker`` first when it serves wsgroups' channel."""

    async def handle(self) -> None:
        if WORKER_CHANNEL in self.channels:
            await start_member(kind="worker")
        await super().handle()


def install() -> None:
    """Make ``manage.py runworker`` run :class:`ClusterWorker` (it behaves as Channels' own
    for every other channel)."""
    if not issubclass(runworker.Command.worker_class, ClusterWorker):
        runworker.Command.worker_class = ClusterWorker
