"""App config of the bench app: ``bench.app`` under the label ``bench``."""

from __future__ import annotations

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench.app"
    label = "bench"
