"""The periodic broadcaster behind ``manage.py wsbroadcast`` (Starcounter's broadcasting timer).

Each tick, in one transaction: subscriptions whose socket is no longer live are deleted;
those that reached the limit get a normal close and are deleted; every other one is sent
the message and counted with one UPDATE. Sends go through the transport, batched per
destination process, and the transaction commits only once the channel layer has taken
them, so a count never runs ahead of what was sent.

Only one broadcaster ticks at a time: each joins the cluster as a ``broadcaster``
process and the live one with the lowest number leads; the others stand by and take over
within ``PROCESS_TIMEOUT`` if it stops. Joining happens at start, on a thread of its own
(:class:`~wsgroups.background.BackgroundMember`): every broadcaster heartbeats and reaps
crashed processes like any other member, between ticks and during them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from . import cluster, ops
from .background import BackgroundMember
from .codes import CloseCode
from .conf import conf
from .exceptions import TransportError
from .ids import split_id
from .models import BroadcastSubscription, Connection, Process
from .runtime import get_transport
from .transport import Transport
from .websocket import WebSocket

__all__ = ["Broadcaster", "TickResult", "check_template"]

#: Seconds before a subscription without a live socket counts as dead.
PRUNE_AFTER = 5.0


@dataclass
class TickResult:
    sent: int = 0
    disconnected: int = 0
    pruned: int = 0
    seconds: float = 0.0
    leading: bool = True

    def line(self) -> str:
        return (
            f"sent {self.sent}, disconnected {self.disconnected}, pruned {self.pruned} in {self.seconds * 1000:.0f} ms"
        )


def check_template(template: str) -> str:
    """Validate a ``--message`` template (``{id}`` is the socket's ID); raise ValueError."""
    try:
        template.format(id=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"message template {template!r} is invalid: only {{id}} may be used ({exc})") from None
    return template


class Broadcaster:
    """Ticks of one ``wsbroadcast`` process."""

    def __init__(self, limit: int, template: str, group: str | None) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.template = check_template(template)
        self.group = group
        self.member = BackgroundMember("broadcaster")
        self.member.start()

    @property
    def process_id(self) -> int:
        return self.member.process_id

    def leading(self) -> bool:
        """Whether this is the live broadcaster with the lowest number (the member heartbeats)."""
        cutoff = cluster.live_cutoff()
        return not Process.objects.filter(
            kind="broadcaster", stopped_at__isnull=True, heartbeat_at__gte=cutoff, pk__lt=self.process_id
        ).exists()

    def stop(self) -> None:
        self.member.stop()

    def _live_ids(self) -> QuerySet[Connection, Any]:
        live = Connection.objects.live()
        if self.group is not None:
            live = live.filter(group=self.group)
        return live.values("id")

    def tick(self) -> TickResult:
        started = time.monotonic()
        if not self.leading():
            return TickResult(leading=False, seconds=time.monotonic() - started)
        result = TickResult()
        transport = get_transport()
        subscriptions = BroadcastSubscription.objects.all()
        with transaction.atomic():
            # A socket's registry row may trail its subscription by a few milliseconds.
            settled = timezone.now() - timedelta(seconds=PRUNE_AFTER)
            dead = subscriptions.filter(created_at__lt=settled).exclude(
                websocket_id__in=Connection.objects.live().values("id")
            )
            result.pruned, _ = dead.delete()
            mine = subscriptions.filter(websocket_id__in=self._live_ids())
            done = list(mine.filter(num_broadcasted__gte=self.limit).values_list("websocket_id", flat=True))
            due = list(mine.filter(num_broadcasted__lt=self.limit).values_list("websocket_id", flat=True))
            for socket_id in done:
                WebSocket(socket_id).disconnect(code=CloseCode.NORMAL)
            sent = self._send_all(transport, due)
            if not transport.block_on(transport.drain(conf.SEND_TIMEOUT), "wsbroadcast"):
                raise TransportError("the channel layer did not take this tick's messages in time")
            for chunk in _chunks(done):
                subscriptions.filter(websocket_id__in=chunk).delete()
            for chunk in _chunks(sent):
                subscriptions.filter(websocket_id__in=chunk).update(num_broadcasted=F("num_broadcasted") + 1)
        result.sent, result.disconnected = len(sent), len(done)
        result.seconds = time.monotonic() - started
        return result

    def _send_all(self, transport: Transport, socket_ids: list[int]) -> list[int]:
        """Queue the message for every socket whose process is alive; return those IDs.

        The same as ``WebSocket(id).send(...)`` for each, with the owner looked up once
        per ID block instead of once per socket.
        """
        verdicts: dict[int, bool] = {}
        sent = []
        for socket_id in socket_ids:
            block = split_id(socket_id)[0]
            if block not in verdicts:
                verdicts[block] = WebSocket(socket_id).send(self.template.format(id=socket_id))
                if verdicts[block]:
                    sent.append(socket_id)
                continue
            if verdicts[block]:
                transport.queue(block, ops.Send(socket_id, self.template.format(id=socket_id)))
                sent.append(socket_id)
        return sent


def _chunks(ids: list[int], size: int = 5000) -> list[list[int]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]
