"""The hypercorn adapter: ``PERMESSAGE_DEFLATE`` decides compression.

hypercorn (0.17, 0.18) accepts every permessage-deflate offer, with no option to turn it
off: its handshake answers the client's ``Sec-WebSocket-Extensions`` with wsproto's
``PerMessageDeflate``. :func:`install` wraps that answer so that, with the setting off,
the offer is ignored (no extension is negotiated and frames go uncompressed), and with
it on, hypercorn's own negotiation runs unchanged. Everything else is hypercorn's own.

:func:`wsgroups.asgi.get_asgi_application` calls :func:`install` when the process runs
hypercorn.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from ..conf import conf

__all__ = ["install"]

HANDSHAKE_MODULE = "hypercorn.protocol.ws_stream"


def _apply_compression_setting(cls: Any) -> None:
    """Make ``cls.accept`` (hypercorn's handshake answer) drop the client's extension offers
    while ``PERMESSAGE_DEFLATE`` is off."""
    if getattr(cls, "_wsgroups_adapted", False):
        return
    accept = cls.accept

    @functools.wraps(accept)
    def accept_as_configured(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not conf.PERMESSAGE_DEFLATE:
            self.extensions = None  # as if the client had offered none
        return accept(self, *args, **kwargs)

    cls.accept = accept_as_configured
    cls._wsgroups_adapted = True


def install() -> None:
    """Adapt the handshake of the installed hypercorn."""
    module = importlib.import_module(HANDSHAKE_MODULE)
    _apply_compression_setting(module.Handshake)
