"""The demo's URLs plus ``/bench/ws``."""

from __future__ import annotations

from django.urls import path

from bench.app import views
from project.urls import urlpatterns as project_urlpatterns

urlpatterns = [*project_urlpatterns, path("bench/ws", views.bench_ws, name="bench_ws")]
