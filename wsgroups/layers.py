"""The channel layer wsgroups links its processes with: a private instance per process,
tuned so that quiet periods and Redis failovers do not lose messages."""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import channel_layers

from .exceptions import TransportError

logger = logging.getLogger("wsgroups.layers")

__all__ = [
    "claim_once",
    "install_layer_tuning",
    "keep_popped_messages",
    "make_layer",
    "new_reachable_channel",
    "reaches_its_receiver",
    "receiving_shard",
    "shard_count",
    "tune_layer",
]


def tune_layer(layer: Any) -> Any:
    """Make a channels_redis layer survive quiet periods.

    redis-py's read timeout defaults to channels_redis's 5 s blocking-read timeout, so a
    reader with nothing to read fails after 5 s (channels_redis issue 422) and a message
    popped just then is lost. The layer's connections get a longer read timeout and a
    short connect timeout (so an outage is noticed quickly), unless configured.
    """
    brpop_timeout = getattr(layer, "brpop_timeout", None)
    for host in getattr(layer, "hosts", None) or ():
        if isinstance(host, dict) and brpop_timeout is not None:
            host.setdefault("socket_timeout", brpop_timeout + 10)
            host.setdefault("socket_connect_timeout", 2)
    return layer


def install_layer_tuning() -> None:
    """Tune every layer Channels builds in this process (consumers and ``runworker`` too)."""
    if getattr(channel_layers, "_wsgroups_tuned", False):
        return
    make_backend = channel_layers.make_backend

    def make_tuned_backend(name: str) -> Any:
        return tune_layer(make_backend(name))

    channel_layers.make_backend = make_tuned_backend
    channel_layers._wsgroups_tuned = True


def make_layer(alias: str) -> Any:
    """A private, tuned instance of the configured channel layer."""
    if alias not in channel_layers.configs:
        raise TransportError(f"CHANNEL_LAYERS has no {alias!r} layer; wsgroups cannot reach other processes")
    return keep_popped_messages(tune_layer(channel_layers.make_backend(alias)))


#: channels_redis's script that puts a receiver's backed-up messages back in its queue.
_RESTORE_BACKUP = """
    local backed_up = redis.call('ZRANGE', ARGV[2], 0, -1, 'WITHSCORES')
    for i = #backed_up, 1, -2 do
        redis.call('ZADD', ARGV[1], backed_up[i], backed_up[i - 1])
    end
    redis.call('DEL', ARGV[2])
"""


def keep_popped_messages(layer: Any) -> Any:
    """Make a channels_redis layer deliver a message it popped even when it cannot back it up.

    channels_redis (4.x) receives with BZPOPMIN, then copies the message to a backup
    queue (in case the receive is cancelled) before returning it. When Redis goes away
    between the two — its primary killed, a failover — the copy fails and the message,
    already gone from Redis, is dropped with the error. Here the error is logged and the
    message returned. Should the copy have reached Redis after all, the message comes
    once more later: the transport recognises and drops such copies, which other users
    of a layer may not, so only wsgroups's own layers get this. Layers without
    channels_redis's receive are left alone.
    """
    if not callable(getattr(layer, "_brpop_with_clean", None)) or not callable(
        getattr(layer, "_backup_channel_name", None)
    ):
        return layer

    async def brpop_with_clean(index: int, channel: str, timeout: float) -> Any:
        connection = layer.connection(index)
        backup = layer._backup_channel_name(channel)
        await connection.eval(_RESTORE_BACKUP, 0, channel, backup)
        result = await connection.bzpopmin(channel, timeout=timeout)
        if result is None:
            return None
        _, member, timestamp = result
        try:
            await connection.zadd(backup, {member: float(timestamp)})
        except Exception as exc:  # Redis went away: the message exists only here now
            logger.warning("wsgroups: a received message could not be backed up (%r); delivering it anyway", exc)
        return member

    layer._brpop_with_clean = brpop_with_clean
    return layer


def shard_count(layer: Any) -> int:
    """How many Redis shards ``layer`` spreads channels over (1 for other layers)."""
    return max(1, int(getattr(layer, "ring_size", 1) or 1))


def receiving_shard(layer: Any, channel: str) -> int:
    """The shard ``layer`` reads a process-local channel (``prefix!suffix``) from."""
    consistent_hash = getattr(layer, "consistent_hash", None)
    if consistent_hash is None or "!" not in channel:
        return 0
    return int(consistent_hash(channel[: channel.index("!") + 1]))


def reaches_its_receiver(layer: Any, channel: str) -> bool:
    """Whether a message ``layer.send()``s to ``channel`` lands on the shard its receiver reads.

    channels_redis (4.3) picks the shard of a send to a process-local channel by hashing
    the whole name, but reads it from the shard of the part before ``!``: with several
    shards, a message to a channel whose two hashes differ is written where nobody reads.
    """
    consistent_hash = getattr(layer, "consistent_hash", None)
    if consistent_hash is None or shard_count(layer) == 1 or "!" not in channel:
        return True
    return bool(consistent_hash(channel) == receiving_shard(layer, channel))


#: New names tried before giving up; with N shards about one in N fits.
MAX_NAME_TRIES = 10_000


async def new_reachable_channel(layer: Any, prefix: str) -> str:
    """A new process-local channel of ``layer`` that messages sent to it reach, with any
    number of shards (see :func:`reaches_its_receiver`)."""
    for _ in range(MAX_NAME_TRIES):
        channel = str(await layer.new_channel(prefix))
        if reaches_its_receiver(layer, channel):
            return channel
    raise TransportError(f"no channel name of {layer!r} lands on the shard it is read from")


async def claim_once(layer: Any, key: str) -> bool:
    """True for the first caller with ``key`` in the whole cluster (for 60 s).

    A message on a channel that several processes receive (the workers' channel) can
    be delivered twice: channels_redis puts a message taken by one receiver back for
    another when that one starts receiving. Claims make each handler call run once.
    """
    connection = getattr(layer, "connection", None)
    if connection is None:
        return True
    name = f"{getattr(layer, 'prefix', 'asgi')}:wsgroups:claim:{key}"
    try:
        client = connection(layer.consistent_hash(name))
        return bool(await client.set(name, b"1", nx=True, ex=60))
    except Exception as exc:
        logger.warning("wsgroups transport: could not claim %s (%r); running it anyway", key, exc)
        return True
