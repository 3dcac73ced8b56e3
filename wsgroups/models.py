"""Database state of wsgroups: processes, their ID blocks, the socket registry, subscriptions."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models

__all__ = ["BroadcastSubscription", "Connection", "IdBlock", "Process"]


class Process(models.Model):
    """One run of a wsgroups process (server, worker or broadcaster)."""

    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, default="server")
    channel_name = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    #: Frames received from and sent to clients per second over the last heartbeat interval.
    messages_in_per_s = models.FloatField(default=0.0)
    messages_out_per_s = models.FloatField(default=0.0)
    #: Connections refused and sockets closed by the limits since the process started, by
    #: reason (see :data:`wsgroups.runtime.LIMIT_COUNTERS`); written with each heartbeat.
    limit_events = models.JSONField(default=dict, blank=True)
    #: Monitoring counters since the process started (messages, closes by code, refusals by
    #: reason, channel-layer errors, handler times), written with each heartbeat; see
    #: :mod:`wsgroups.metrics` and ``wsgroups.views.metrics``. Nullable, so that processes of
    #: the previous version (which do not know the column) can still register during a rollout.
    metrics = models.JSONField(default=dict, blank=True, null=True)

    class Meta:
        ordering: ClassVar = ["-started_at"]
        verbose_name = "process"
        verbose_name_plural = "processes"

    def __str__(self) -> str:
        return f"{self.kind} {self.hostname}:{self.pid} (#{self.pk})"


class IdBlock(models.Model):
    """A range of socket IDs owned by one process; its primary key is the ID's high bits.

    Rows are never deleted or reused, so an ID is never handed out twice, across
    restarts and across processes.
    """

    process = models.ForeignKey(Process, on_delete=models.CASCADE, related_name="id_blocks")
    allocated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering: ClassVar = ["-pk"]
        verbose_name = "ID block"

    def __str__(self) -> str:
        return f"ID block {self.pk} of {self.process}"


class ConnectionQuerySet(models.QuerySet["Connection"]):
    def live(self) -> ConnectionQuerySet:
        """Sockets that are open as far as the registry knows."""
        return self.filter(state=Connection.State.OPEN)


class Connection(models.Model):
    """One row per upgraded socket: the registry that admin shows and crash recovery reads.

    Rows are written in batches off the message path, so a socket appears here a moment
    after it opens and turns closed a moment after it ends.
    """

    class State(models.TextChoices):
        OPEN = "open", "open"
        CLOSED = "closed", "closed"

    id = models.BigIntegerField(primary_key=True, verbose_name="WebSocket ID")
    group = models.CharField(max_length=255, db_index=True)
    path = models.CharField(max_length=2048, blank=True, default="")
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN, db_index=True)
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    close_code = models.PositiveIntegerField(null=True, blank=True)
    close_reason = models.CharField(max_length=255, blank=True, default="")
    session_key = models.CharField(max_length=64, blank=True, default="", db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, db_constraint=False
    )
    remote_addr = models.CharField(max_length=64, blank=True, default="")
    subprotocol = models.CharField(max_length=255, blank=True, default="")
    process = models.ForeignKey(Process, on_delete=models.CASCADE, related_name="connections")

    objects = ConnectionQuerySet.as_manager()

    class Meta:
        ordering: ClassVar = ["-opened_at"]
        verbose_name = "WebSocket connection"

    def __str__(self) -> str:
        return f"WebSocket {self.pk} ({self.group}, {self.state})"


class BroadcastSubscription(models.Model):
    """A socket subscribed to the periodic broadcaster (``manage.py wsbroadcast``)."""

    websocket_id = models.BigIntegerField(unique=True, verbose_name="WebSocket ID")
    num_broadcasted = models.PositiveIntegerField(default=0, verbose_name="messages broadcast")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering: ClassVar = ["created_at"]
        verbose_name = "broadcast subscription"

    def __str__(self) -> str:
        return f"subscription of WebSocket {self.websocket_id} ({self.num_broadcasted} sent)"
