"""``Group``: every socket upgraded into one group name, in every process of the cluster
(Starcounter's ``WebSocket.ForEach`` and ``DisconnectEach``).

The part of a group held here is acted on directly; every other server process gets
one operation over the channel layer and answers with its count or its members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from . import ops
from .codes import CloseCode
from .handshake import check_close
from .runtime import cluster_transport, current_runtime
from .transport import Transport
from .websocket import WebSocket, frame_message, payload_of

__all__ = ["Group", "ask_each_server"]

logger = logging.getLogger("wsgroups")


async def ask_each_server(transport: Transport, op: ops.Query) -> list[Any]:
    """Ask every live server process but this one; the answers of those that replied."""
    servers = [s for s in await transport.directory.live_servers() if s.channel_name != transport.channel_name]
    answers = await asyncio.gather(*(transport.request(s.channel_name, op) for s in servers), return_exceptions=True)
    results = []
    for server, answer in zip(servers, answers, strict=True):
        if isinstance(answer, BaseException):
            logger.warning("wsgroups: process #%s did not answer %s: %s", server.id, type(op).__name__, answer)
        else:
            results.append(answer)
    return results


async def _sum(transport: Transport, op: ops.Query) -> int:
    return sum(await ask_each_server(transport, op))


async def _members(transport: Transport, group: str) -> list[int]:
    return [socket_id for answer in await ask_each_server(transport, ops.Members(group)) for socket_id in answer]


class Group:
    """All sockets upgraded into one group name, in every process."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty group name, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"<Group {self.name!r}>"

    def _local_broadcast(self, payload: str | bytes, excluded: set[int]) -> int:
        runtime = current_runtime()
        if runtime is None:
            return 0
        return runtime.run_on_loop(lambda: runtime.table.broadcast(self.name, payload, excluded))

    def _local_close(self, code: int, reason: str) -> int:
        runtime = current_runtime()
        return runtime.run_on_loop(lambda: runtime.table.close_group(self.name, code, reason)) if runtime else 0

    def _local_members(self) -> list[int]:
        runtime = current_runtime()
        return runtime.run_on_loop(lambda: runtime.table.member_ids(self.name)) if runtime else []

    def broadcast(self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None) -> int:
        """Send ``data`` to every live socket of the group but ``exclude``; return how many took it."""
        payload = payload_of(frame_message(data, is_text))
        excluded = {int(ws) for ws in exclude}
        count = self._local_broadcast(payload, excluded)
        transport = cluster_transport()
        if transport is not None:
            op = ops.Broadcast(self.name, payload, sorted(excluded))
            count += transport.block_on(_sum(transport, op), "Group.broadcast()")
        return count

    async def abroadcast(
        self, data: str | bytes, exclude: Iterable[WebSocket | int] = (), is_text: bool | None = None
    ) -> int:
        """Async :meth:`broadcast`."""
        payload = payload_of(frame_message(data, is_text))
        excluded = {int(ws) for ws in exclude}
        count = self._local_broadcast(payload, excluded)
        transport = cluster_transport()
        if transport is not None:
            op = ops.Broadcast(self.name, payload, sorted(excluded))
            count += await transport.await_on_loop(_sum(transport, op))
        return count

    def disconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Close every live socket of the group; return how many were closed."""
        code, reason = check_close(code, message)
        count = self._local_close(code, reason)
        transport = cluster_transport()
        if transport is not None:
            op = ops.GroupClose(self.name, code, reason)
            count += transport.block_on(_sum(transport, op), "Group.disconnect()")
        return count

    async def adisconnect(self, message: str | None = None, code: int = CloseCode.GOING_AWAY) -> int:
        """Async :meth:`disconnect`."""
        code, reason = check_close(code, message)
        count = self._local_close(code, reason)
        transport = cluster_transport()
        if transport is not None:
            count += await transport.await_on_loop(_sum(transport, ops.GroupClose(self.name, code, reason)))
        return count

    def sockets(self) -> list[WebSocket]:
        """The live sockets of the group, in every process."""
        ids = self._local_members()
        transport = cluster_transport()
        if transport is not None:
            ids += transport.block_on(_members(transport, self.name), "Group.sockets()")
        return [WebSocket(socket_id) for socket_id in ids]

    async def asockets(self) -> list[WebSocket]:
        """Async :meth:`sockets`."""
        ids = self._local_members()
        transport = cluster_transport()
        if transport is not None:
            ids += await transport.await_on_loop(_members(transport, self.name))
        return [WebSocket(socket_id) for socket_id in ids]
