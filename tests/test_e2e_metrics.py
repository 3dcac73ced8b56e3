"""``wsgroups.views.metrics`` on a real two-server cluster (daphne and uvicorn): counted
traffic, closes with codes and refusals, then a scrape of either server shows the same
numbers for the whole cluster."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .conftest import Cluster, Server
from .wsapp.urls import METRICS_TOKEN

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server, token: str | None = METRICS_TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"{server.http}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(server: Server, done: Callable[[Samples], bool], timeout: float = 30) -> Samples:
    """Scrape until ``done`` holds: counters arrive with the next heartbeat (1 s in the tests)."""
    deadline = time.monotonic() + timeout
    while True:
        status, text = scrape(server)
        assert status == 200, text
        samples = parse(text)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


async def opened(server: Server, **kwargs: Any) -> tuple[ClientConnection, int]:
    ws = await connect(f"{server.url}/ws/echo", **kwargs)
    return ws, int(json.loads(await ws.recv())["id"])


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_a_scrape_of_either_server_shows_the_whole_clusters_counters(cluster: Cluster) -> None:
    daphne, uvicorn = cluster.servers
    servers = {server.kind: server for server in cluster.servers}
    plan = {"daphne": 7, "uvicorn": 11}  # echoes per socket
    sent_by_id = "by ID from another process"

    async def traffic() -> dict[str, int]:
        """Per server: 3 sockets, each sends its echoes; closes 1000, 4001 (client) and 4002 (server);
        one more socket stays open; one upgrade refused for its origin."""
        socket_ids: dict[str, int] = {}
        for kind, echoes in plan.items():
            server = servers[kind]
            sockets = [await opened(server) for _ in range(3)]
            for ws, _ in sockets:
                for n in range(echoes):
                    await ws.send(f"m{n}")
                    assert await asyncio.wait_for(ws.recv(), 10) == f"m{n}"
            await sockets[0][0].close(1000)
            await sockets[1][0].close(4001, "client leaves")
            await sockets[2][0].send("close:4002:server says bye")
            await asyncio.wait_for(sockets[2][0].wait_closed(), 10)
            assert sockets[2][0].close_code == 4002
            staying, socket_ids[kind] = await opened(server)
            stay_open.append(staying)
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{server.url}/ws/echo", origin="http://evil.example")  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403
        return socket_ids

    stay_open: list[ClientConnection] = []

    def check_scrapes() -> None:
        first = scrape_until(daphne, lambda s: process_of(s, uvicorn)["process"] != "?")
        process = {kind: process_of(first, servers[kind])["process"] for kind in plan}
        assert len(set(process.values())) == 2, "each server is a process of its own"

        def expected(kind: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            echoes, p = plan[kind], process[kind]
            received = 3 * echoes + 1  # the echoes, and "close:..."
            sent = 4 + 3 * echoes + (1 if kind == "uvicorn" else 0)  # a welcome per socket, the echoes
            return {
                ("wsgroups_messages_received_total", frozenset({("process", p)})): received,
                ("wsgroups_messages_sent_total", frozenset({("process", p)})): sent,
                ("wsgroups_closes_total", frozenset({("process", p), ("code", "1000")})): 1,
                ("wsgroups_closes_total", frozenset({("process", p), ("code", "4001")})): 1,
                ("wsgroups_closes_total", frozenset({("process", p), ("code", "4002")})): 1,
                ("wsgroups_refusals_total", frozenset({("process", p), ("reason", "origin")})): 1,
                ("wsgroups_refusals_total", frozenset({("process", p), ("reason", "connection_limit")})): 0,
                ("wsgroups_sockets_open", frozenset({("process", p), ("group", "echo")})): 1,
                # A handler call per message, and the disconnect handler of the three closed sockets.
                ("wsgroups_handler_seconds_count", frozenset({("process", p)})): received + 3,
                ("wsgroups_handler_seconds_bucket", frozenset({("process", p), ("le", "+Inf")})): received + 3,
                ("wsgroups_layer_errors_total", frozenset({("process", p)})): 0,
            }

        wanted = {**expected("daphne"), **expected("uvicorn")}

        def matches(samples: Samples) -> bool:
            return all(samples.get(key) == count for key, count in wanted.items())

        for server in (daphne, uvicorn):
            samples = scrape_until(server, matches)
            assert {key: samples.get(key) for key in wanted} == wanted, f"scraped from {server.kind}"
            assert value(samples, "wsgroups_processes_live", kind="server") == 2
            for p in process.values():
                assert value(samples, "wsgroups_handler_seconds_sum", process=p) > 0
        # Without the token, nothing.
        assert scrape(daphne, token=None)[0] == 401
        assert scrape(uvicorn, token="wrong")[0] == 401

    async def scenario() -> None:
        try:
            socket_ids = await traffic()
            # A send by ID from a separate process counts as sent by the process holding the socket.
            assert await asyncio.to_thread(cluster.ctl, "send", str(socket_ids["uvicorn"]), sent_by_id) is True
            assert await asyncio.wait_for(stay_open[1].recv(), 10) == sent_by_id
            await asyncio.to_thread(check_scrapes)
        finally:
            for ws in stay_open:
                await ws.close()

    asyncio.run(scenario())


def process_of(samples: Samples, server: Server) -> dict[str, str]:
    """``{"process": id}`` of the process row of ``server`` (by its PID in wsgroups_process_info)."""
    for (name, labels), _ in samples.items():
        found = dict(labels)
        if name == "wsgroups_process_info" and found.get("pid") == str(server.process.pid):
            return {"process": found["process"]}
    return {"process": "?"}
