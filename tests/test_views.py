"""``wsgroups.views.metrics``: the cluster from the database in Prometheus' text format, and
``require_bearer_token``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from wsgroups.metrics import HandlerTimes, snapshot
from wsgroups.models import Connection, Process
from wsgroups.views import metrics, require_bearer_token


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def processes(db: None) -> dict[str, Process]:
    now = timezone.now()
    times = HandlerTimes()
    times.observe(0.002)
    times.observe(0.3)
    web1 = Process.objects.create(
        hostname="web1",
        pid=11,
        heartbeat_at=now,
        metrics=snapshot({"frames_in": 5, "frames_out": 9, "origin_refused": 2}, {1000: 3, 4001: 1}, 1, times),
    )
    web2 = Process.objects.create(hostname="web2", pid=22, heartbeat_at=now - timedelta(seconds=1))  # no counters yet
    worker = Process.objects.create(hostname="web1", pid=33, kind="worker", heartbeat_at=now)
    dead = Process.objects.create(hostname="web3", pid=44, heartbeat_at=now - timedelta(minutes=5))
    Connection.objects.bulk_create(
        Connection(id=socket_id, group=group, process=process, state=state, opened_at=now)
        for socket_id, group, process, state in [
            (1, "chat", web1, "open"),
            (2, "chat", web1, "open"),
            (3, "chat", web2, "open"),
            (4, "echo", web2, "open"),
            (5, "echo", web1, "closed"),
        ]
    )
    return {"web1": web1, "web2": web2, "worker": worker, "dead": dead}


def test_a_scrape_shows_every_live_process_of_the_cluster(processes: dict[str, Process]) -> None:
    response = metrics(RequestFactory().get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    found = samples(text)
    web1, web2, worker = (str(processes[name].pk) for name in ("web1", "web2", "worker"))
    assert found[("wsgroups_sockets_open", (("group", "chat"), ("process", web1)))] == 2
    assert found[("wsgroups_sockets_open", (("group", "chat"), ("process", web2)))] == 1
    assert found[("wsgroups_sockets_open", (("group", "echo"), ("process", web2)))] == 1
    assert ("wsgroups_sockets_open", (("group", "echo"), ("process", web1))) not in found  # closed
    assert found[("wsgroups_processes_live", (("kind", "server"),))] == 2
    assert found[("wsgroups_processes_live", (("kind", "worker"),))] == 1
    assert found[("wsgroups_messages_received_total", (("process", web1),))] == 5
    assert found[("wsgroups_messages_sent_total", (("process", web1),))] == 9
    assert found[("wsgroups_messages_received_total", (("process", web2),))] == 0
    assert found[("wsgroups_closes_total", (("code", "1000"), ("process", web1)))] == 3
    assert found[("wsgroups_closes_total", (("code", "4001"), ("process", web1)))] == 1
    assert found[("wsgroups_refusals_total", (("process", web1), ("reason", "origin")))] == 2
    assert found[("wsgroups_layer_errors_total", (("process", web1),))] == 1
    assert found[("wsgroups_handler_seconds_count", (("process", web1),))] == 2
    assert found[("wsgroups_handler_seconds_bucket", (("le", "0.0025"), ("process", web1)))] == 1
    assert found[("wsgroups_handler_seconds_bucket", (("le", "+Inf"), ("process", web1)))] == 2
    assert found[("wsgroups_handler_seconds_sum", (("process", web1),))] == pytest.approx(0.302)
    assert (
        found[("wsgroups_process_info", (("hostname", "web1"), ("kind", "worker"), ("pid", "33"), ("process", worker)))]
        == 1
    )
    # A dead process is no longer reported.
    assert str(processes["dead"].pk) not in {value for key in found for _, value in key[1]}
    assert "# TYPE wsgroups_handler_seconds histogram" in text
    assert "# TYPE wsgroups_closes_total counter" in text


def test_the_view_answers_get_and_head_only(processes: dict[str, Process]) -> None:
    assert metrics(RequestFactory().post("/metrics")).status_code == 405
    assert metrics(RequestFactory().head("/metrics")).status_code == 200


def test_openmetrics_when_asked_for(processes: dict[str, Process]) -> None:
    response = metrics(RequestFactory().get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"))
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("in")


def test_a_bearer_token_guards_a_view() -> None:
    view = require_bearer_token("s3cret")(ok)
    factory = RequestFactory()
    assert view(factory.get("/", HTTP_AUTHORIZATION="Bearer s3cret")).content == b"in"
    for header in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "s3cret"}):
        response = view(factory.get("/", **header))
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("token", ["", "   ", None])
def test_an_empty_token_is_refused_at_once(token: object) -> None:
    with pytest.raises(ValueError, match="token"):
        require_bearer_token(token)  # type: ignore[arg-type]


def test_the_demo_routes_it_for_staff_only(processes: dict[str, Process], settings: Any) -> None:
    settings.ROOT_URLCONF = "project.urls"
    client = Client()
    response = client.get("/metrics")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(User.objects.create_user("ann", is_staff=False))
    assert client.get("/metrics").status_code == 302
    client.force_login(User.objects.create_user("bob", is_staff=True))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"wsgroups_processes_live" in response.content
