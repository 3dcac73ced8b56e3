"""Database state of wsgroups: the processes that hold sockets and their ID blocks."""

from __future__ import annotations

from django.db import models

__all__ = ["IdBlock", "Process"]


class Process(models.Model):
    """One run of a wsgroups process (server, worker or broadcaster)."""

    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, default="server")
    channel_name = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
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
        ordering = ["-pk"]
        verbose_name = "ID block"

    def __str__(self) -> str:
        return f"ID block {self.pk} of {self.process}"
