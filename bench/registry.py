"""Where servers leave the addresses of their sockets for sender processes: Redis sets.

Both sets live in the Redis of ``REDIS_URL`` (the one the channel layer uses):
:data:`WSGROUPS_KEY` holds wsgroups socket IDs, :data:`BARE_KEY` the channel names of
bare Channels consumers.
"""

from __future__ import annotations

import os
from functools import cache

import redis
import redis.asyncio

WSGROUPS_KEY = "bench:wsgroups:ids"
BARE_KEY = "bench:bare:channels"

__all__ = ["BARE_KEY", "WSGROUPS_KEY", "async_client", "sync_client"]


def _url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise RuntimeError("the benchmark needs REDIS_URL")
    return url


@cache
def sync_client() -> redis.Redis:
    """A blocking client, shared by the threads of this process."""
    return redis.Redis.from_url(_url())


@cache
def async_client() -> redis.asyncio.Redis:
    """A client for the process's one event loop (a server's)."""
    return redis.asyncio.Redis.from_url(_url())
