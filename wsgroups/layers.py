"""The channel layer wsgroups links its processes with: a private instance per process,
tuned so that quiet periods do not lose messages."""

from __future__ import annotations

from typing import Any

from channels.layers import channel_layers

from .exceptions import TransportError

__all__ = ["install_layer_tuning", "make_layer", "tune_layer"]


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
    return tune_layer(channel_layers.make_backend(alias))
