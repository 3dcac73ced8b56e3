"""Settings for benchmark runs: the demo project plus the bench app and its URLconf."""

from __future__ import annotations

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, WSGROUPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.app"]
ROOT_URLCONF = "bench.urls"
ASGI_APPLICATION = "bench.asgi.application"

# The load comes from one client address at rates no browser sends: keep the limits out of
# its way, but switched on, so their cost is part of what is measured.
WSGROUPS = {
    **WSGROUPS,
    "MAX_CONNECTIONS": 100_000,
    "MAX_CONNECTIONS_PER_CLIENT": 100_000,
    "MESSAGE_RATE": 1_000_000.0,
    "MESSAGE_BURST": 1_000_000,
    # python -m bench --permessage-deflate
    "PERMESSAGE_DEFLATE": os.environ.get("WSGROUPS_BENCH_PERMESSAGE_DEFLATE") == "1",
}
# bench.asgi routes by path between wsgroups and the bare consumer, on purpose.
SILENCED_SYSTEM_CHECKS = ["wsgroups.W002"]
