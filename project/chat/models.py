"""Who is in which chat room: one row per open chat socket, shared by every server process."""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class ChatMember(models.Model):
    websocket_id = models.BigIntegerField(primary_key=True, verbose_name="WebSocket ID")
    room = models.CharField(max_length=64, db_index=True)
    nickname = models.CharField(max_length=32)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering: ClassVar = ["joined_at"]

    def __str__(self) -> str:
        return f"{self.nickname} in {self.room}"
