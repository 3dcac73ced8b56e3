"""Django views of wsgroups: :func:`metrics`, the whole cluster in Prometheus' text format.

Any process that serves Django requests answers for every process of the cluster: the
counters travel with each process's heartbeat into ``Process.metrics``, so a scrape
reads the database (two queries) and asks no other process. The exposition itself is
``prometheus_client``'s, on a private registry per request (nothing global is touched).

The view has no protection of its own: route it and protect it like any view, e.g.
``staff_member_required(metrics)`` for people, or ``require_bearer_token(token)(metrics)``
for a Prometheus server configured with that token (both in the README's *Monitoring*).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .cluster import live_cutoff
from .metrics import read_snapshot
from .models import Connection, Process

__all__ = ["ClusterCollector", "metrics", "require_bearer_token"]

View = Callable[..., HttpResponseBase]


class ClusterCollector(Collector):
    """The cluster's metrics as the database records them, read at each :meth:`collect`."""

    def collect(self) -> Iterable[Metric]:
        processes = list(
            Process.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=live_cutoff())
            .order_by("pk")
            .values_list("pk", "kind", "hostname", "pid", "metrics")
        )
        open_sockets = (
            Connection.objects.live()
            .order_by()
            .values_list("group", "process_id")
            .annotate(count=Count("pk"))
            .order_by("group", "process_id")
        )

        sockets = GaugeMetricFamily(
            "wsgroups_sockets_open", "Open WebSockets by group and server process.", labels=["group", "process"]
        )
        for group, process_id, count in open_sockets:
            sockets.add_metric([group, str(process_id)], count)
        yield sockets

        live = GaugeMetricFamily(
            "wsgroups_processes_live", "Processes with a recent heartbeat, by kind.", labels=["kind"]
        )
        kinds: dict[str, int] = {}
        for _, kind, *_rest in processes:
            kinds[kind] = kinds.get(kind, 0) + 1
        for kind in ("server", "worker", "broadcaster", *sorted(set(kinds) - {"server", "worker", "broadcaster"})):
            live.add_metric([kind], kinds.get(kind, 0))
        yield live

        info = GaugeMetricFamily(
            "wsgroups_process_info",
            "Always 1: the kind, host and PID of each live process, by its process ID.",
            labels=["process", "kind", "hostname", "pid"],
        )
        received = CounterMetricFamily(
            "wsgroups_messages_received", "Messages received from clients.", labels=["process"]
        )
        sent = CounterMetricFamily("wsgroups_messages_sent", "Messages sent to clients.", labels=["process"])
        closes = CounterMetricFamily("wsgroups_closes", "Sockets ended, by close code.", labels=["process", "code"])
        refusals = CounterMetricFamily(
            "wsgroups_refusals",
            "Upgrades refused and sockets closed by a limit, by reason.",
            labels=["process", "reason"],
        )
        layer_errors = CounterMetricFamily(
            "wsgroups_layer_errors", "Channel-layer calls that failed (retried or not).", labels=["process"]
        )
        handler_seconds = HistogramMetricFamily(
            "wsgroups_handler_seconds", "Time handlers took, per call.", labels=["process"]
        )
        for pk, kind, hostname, pid, data in processes:
            process = str(pk)
            info.add_metric([process, kind, hostname, str(pid)], 1)
            counts = read_snapshot(data)
            received.add_metric([process], counts.received)
            sent.add_metric([process], counts.sent)
            for code, count in sorted(counts.closes.items()):
                closes.add_metric([process, str(code)], count)
            for reason, count in sorted(counts.refusals.items()):
                refusals.add_metric([process, reason], count)
            layer_errors.add_metric([process], counts.layer_errors)
            handler_seconds.add_metric([process], counts.cumulative_buckets(), counts.handler_sum)
        yield from (info, received, sent, closes, refusals, layer_errors, handler_seconds)


@require_safe
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """The cluster's sockets, messages, closes, refusals, layer errors, handler times and
    live processes, in the exposition format the ``Accept`` header asks for (Prometheus'
    text format by default)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector())
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(registry), content_type=content_type)


def require_bearer_token(token: str) -> Callable[[View], View]:
    """A view decorator: only requests with ``Authorization: Bearer <token>`` get through;
    others get 401 with ``WWW-Authenticate: Bearer``. ``token`` must be a non-empty string
    (say, from an environment variable), or :class:`ValueError` is raised at once."""
    if not isinstance(token, str) or not token.strip():
        raise ValueError("require_bearer_token(token): token must be a non-empty string")
    expected = f"Bearer {token}".encode()

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                response = HttpResponse("A bearer token is required.", status=401, content_type="text/plain")
                response["WWW-Authenticate"] = 'Bearer realm="wsgroups"'
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
