"""Where servers leave the addresses of their sockets for sender processes: Redis sets.

Both sets live in the Redis of ``REDIS_URL`` (the one the channel layer uses; the first
one when several comma-separated URLs shard the layer): :data:`WSGROUPS_KEY` holds
wsgroups socket IDs, :data:`BARE_KEY` the channel names of bare Channels consumers. The
hash :data:`DISCONNECTS_KEY` counts the runs of each wsgroups socket's disconnect handler.
"""

from __future__ import annotations

import os
from functools import cache

import redis
import redis.asyncio

WSGROUPS_KEY = "bench:wsgroups:ids"
BARE_KEY = "bench:bare:channels"
#: Redis hash: socket ID → how many times its disconnect handler ran (must end at 1).
DISCONNECTS_KEY = "bench:wsgroups:disconnects"

__all__ = ["BARE_KEY", "DISCONNECTS_KEY", "WSGROUPS_KEY", "async_client", "shard_clients", "sync_client", "urls"]


def urls() -> list[str]:
    """The Redis URLs of ``REDIS_URL``: one, or the shards of the channel layer."""
    found = [url.strip() for url in os.environ.get("REDIS_URL", "").split(",") if url.strip()]
    if not found:
        raise RuntimeError("the benchmark needs REDIS_URL")
    return found


def _url() -> str:
    return urls()[0]


@cache
def sync_client() -> redis.Redis:
    """A blocking client, shared by the threads of this process."""
    return redis.Redis.from_url(_url())


@cache
def shard_clients() -> list[redis.Redis]:
    """A blocking client for every Redis of ``REDIS_URL`` (the first is :func:`sync_client`)."""
    return [sync_client(), *(redis.Redis.from_url(url) for url in urls()[1:])]


@cache
def async_client() -> redis.asyncio.Redis:
    """A client for the process's one event loop (a server's)."""
    return redis.asyncio.Redis.from_url(_url())
