"""Applying the operations other processes send to this one (see :mod:`wsgroups.ops`).

The transport hands each batch here in arrival order. Sends and closes act on the
socket table at once, joins and leaves on the room table; queries answer from them; a
:class:`~wsgroups.ops.Handle` (this is a worker) starts the handler in a task, which answers when it is done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import ops
from .dispatch import handle_for_server
from .runtime import Runtime
from .socket_table import frame

__all__ = ["Inbox"]

logger = logging.getLogger("wsgroups")


class Inbox:
    """The ``on_ops`` of a runtime's transport."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._handler_tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, batch: list[ops.Op], reply_to: str) -> list[list[Any]]:
        """Apply ``batch``; return the answers as ``[token, result]`` pairs."""
        runtime = self.runtime
        table = runtime.table
        rooms = runtime.rooms
        answers: list[list[Any]] = []
        for op in batch:
            match op:
                case ops.Send(socket_id, payload, flags):
                    sock = table.get(socket_id)
                    if sock is None or not sock.send(frame(payload), flags):
                        runtime.stats["sends_to_dead"] += 1
                case ops.Close(socket_id, code, reason):
                    sock = table.get(socket_id)
                    if sock is not None:
                        sock.close(code, reason)
                case ops.Broadcast(group, payload, excluded, token):
                    answers.append([token, table.broadcast(group, payload, excluded)])
                case ops.GroupClose(group, code, reason, token):
                    answers.append([token, table.close_group(group, code, reason)])
                case ops.Alive(socket_ids, token):
                    answers.append([token, table.open_ids(socket_ids)])
                case ops.Members(group, token):
                    answers.append([token, table.member_ids(group)])
                case ops.Join(socket_id, room, meta, token):
                    sock = table.get(socket_id)
                    answers.append([token, sock is not None and rooms.join(sock, room, meta)])
                case ops.Leave(socket_id, room, token):
                    answers.append([token, rooms.leave(socket_id, room)])
                case ops.Rooms(socket_id, token):
                    answers.append([token, rooms.rooms_of(socket_id)])
                case ops.RoomBroadcast(room, payload, excluded, token):
                    answers.append([token, rooms.broadcast(room, payload, excluded)])
                case ops.RoomClose(room, code, reason, token):
                    answers.append([token, rooms.close_room(room, code, reason)])
                case ops.RoomMembers(room, token):
                    answers.append([token, rooms.member_ids(room)])
                case ops.RoomPresence(room, token):
                    answers.append([token, rooms.presence(room)])
                case ops.RoomCounts(token):
                    answers.append([token, rooms.counts()])
                case ops.Handle():
                    task = runtime.loop.create_task(handle_for_server(runtime, op, reply_to))
                    self._handler_tasks.add(task)
                    task.add_done_callback(self._handler_tasks.discard)
                case _:
                    logger.error("wsgroups: cannot apply %r from another process here", op)
        return answers
