"""Unit tests of wsgroups.membership: the heartbeat loop (reaping, rejoining after being
declared dead, surviving a failed beat) and join(), with the cluster's database functions
monkeypatched and HEARTBEAT_INTERVAL tiny."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from django.test import override_settings

from wsgroups import dispatch as dispatch_module
from wsgroups import membership
from wsgroups.handlers import HandlerRegistry
from wsgroups.ids import make_id
from wsgroups.inbox import Inbox
from wsgroups.membership import heartbeat_loop, join
from wsgroups.metrics import read_snapshot
from wsgroups.outbox import LocalSocket

ACCEPT = {"type": "websocket.accept"}
FAST = {"HEARTBEAT_INTERVAL": 0.005, "HANDLER_MODE": "inline"}


@pytest.fixture
def runtime(runtime):
    runtime.process_id = 17
    return runtime


class FakeCluster:
    """cluster.heartbeat / reap_dead_processes / prune_closed_connections, scripted per beat."""

    def __init__(self, beats=(), reaps=(), reaped_here=()):
        self.beats = list(beats)  # True, False or an exception, one per beat; then True
        self.reaps = list(reaps)  # lists of (id, group, session_key), one per beat; then []
        self.reaped_here = set(reaped_here)  # IDs of this process's sockets another process reaped
        self.heartbeats = []
        self.metrics = []  # what each beat carried for monitoring
        self.reaped_by = []
        self.prunes = 0
        self.events = []  # "beat" and "reap", in the order they happened

    def heartbeat(self, process_id, rate_in, rate_out, limit_events, metrics):
        self.heartbeats.append((process_id, rate_in, rate_out, limit_events))
        self.metrics.append(metrics)
        self.events.append("beat")
        outcome = self.beats.pop(0) if self.beats else True
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def reap_dead_processes(self, reaper_id):
        self.reaped_by.append(reaper_id)
        self.events.append("reap")
        return self.reaps.pop(0) if self.reaps else []

    def reaped_socket_ids(self, process_id):
        return set(self.reaped_here)

    def prune_closed_connections(self):
        self.prunes += 1
        return 0


@pytest.fixture
def fake_cluster(monkeypatch):
    def install(**kwargs):
        fake = FakeCluster(**kwargs)
        monkeypatch.setattr(membership.cluster, "heartbeat", fake.heartbeat)
        monkeypatch.setattr(membership.cluster, "reap_dead_processes", fake.reap_dead_processes)
        monkeypatch.setattr(membership.cluster, "prune_closed_connections", fake.prune_closed_connections)
        monkeypatch.setattr(membership.cluster, "reaped_socket_ids", fake.reaped_socket_ids)
        return fake

    return install


def run_beats(runtime, until, timeout=3.0):
    """Run heartbeat_loop until ``until()`` holds (or the timeout), then cancel it."""

    async def body():
        task = asyncio.ensure_future(heartbeat_loop(runtime))
        deadline = runtime.loop.time() + timeout
        while not until() and runtime.loop.time() < deadline and not task.done():
            await asyncio.sleep(0.005)
        assert not task.done(), "the heartbeat loop ended by itself"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    return runtime.loop.run_until_complete(body())


def open_socket(runtime, socket_id, group="chat"):
    sent = []

    async def send(message):
        sent.append(dict(message))

    sock = LocalSocket(
        socket_id, "/ws", send, runtime.loop, limit=100, counters=runtime.stats, on_overflow=lambda sock: None
    )
    sock.group = group
    sock.accept(dict(ACCEPT))
    runtime.table.add(sock)
    return sock, sent


@override_settings(WSGROUPS=FAST)
def test_reaped_sockets_get_run_disconnect_once_each(runtime, fake_cluster, monkeypatch):
    dead = [(make_id(90, 1), "chat", "key1"), (make_id(90, 2), "news", "")]
    fake = fake_cluster(reaps=[dead, [], []])
    disconnected = []

    async def fake_run_disconnect(rt, socket_id, group, session_key):
        disconnected.append((rt, socket_id, group, session_key))

    monkeypatch.setattr(membership, "run_disconnect", fake_run_disconnect)
    run_beats(runtime, lambda: len(fake.heartbeats) >= 4)
    assert disconnected == [(runtime, *row) for row in dead]
    assert runtime.stats["reaped"] == 2
    assert set(fake.reaped_by) == {17}
    assert set(h[0] for h in fake.heartbeats) == {17}


@override_settings(WSGROUPS=FAST)
def test_reaped_sockets_run_the_groups_real_disconnect_handler(runtime, fake_cluster, monkeypatch):
    registry = HandlerRegistry()
    monkeypatch.setattr(dispatch_module, "handle", registry)
    ran = []

    @registry.websocket_disconnect("chat")
    async def on_disconnect(ws):
        ran.append((ws.id, ws.group, ws.session_key_hint()))

    fake = fake_cluster(reaps=[[(make_id(90, 1), "chat", "k"), (make_id(90, 2), "other", "")]])
    run_beats(runtime, lambda: len(fake.heartbeats) >= 3)
    assert ran == [(make_id(90, 1), "chat", "k")]
    assert runtime.stats["reaped"] == 2


@override_settings(WSGROUPS=FAST)
def test_heartbeat_reports_rates_and_only_nonzero_limit_counts(runtime, fake_cluster):
    fake = fake_cluster()
    runtime.stats["frames_in"] = 500
    runtime.stats["frames_out"] = 300
    runtime.stats["rate_limited"] = 3
    runtime.stats["opened"] = 9  # not a limit counter
    run_beats(runtime, lambda: len(fake.heartbeats) >= 2)
    (_, in_1, out_1, limits_1), (_, in_2, out_2, limits_2) = fake.heartbeats[:2]
    assert in_1 > 0 and out_1 > 0 and in_1 > out_1
    assert (in_2, out_2) == (0.0, 0.0)  # nothing arrived since the first beat
    assert limits_1 == limits_2 == {"rate_limited": 3}


@override_settings(WSGROUPS=FAST)
def test_heartbeat_carries_the_monitoring_counters(runtime, fake_cluster):
    fake = fake_cluster()
    runtime.stats["frames_in"] = 7
    runtime.stats["frames_out"] = 8
    runtime.stats["origin_refused"] = 2
    runtime.count_close(1000)
    runtime.count_close(1000)
    runtime.count_close(4001)
    runtime.handler_times.observe(0.01)
    run_beats(runtime, lambda: len(fake.heartbeats) >= 2)
    counted = read_snapshot(fake.metrics[0])
    assert (counted.received, counted.sent) == (7, 8)
    assert counted.closes == {1000: 2, 4001: 1}
    assert counted.refusals["origin"] == 2
    assert sum(counted.handler_counts) == 1
    assert counted.layer_errors == 0  # no transport here


@override_settings(WSGROUPS=FAST)
def test_prune_runs_once_per_prune_interval(runtime, fake_cluster, monkeypatch):
    fake = fake_cluster()
    run_beats(runtime, lambda: len(fake.heartbeats) >= 4)
    assert fake.prunes == 1
    monkeypatch.setattr(membership, "PRUNE_INTERVAL", 0.0)
    fake = fake_cluster()
    run_beats(runtime, lambda: len(fake.heartbeats) >= 4)
    assert fake.prunes >= 3


@override_settings(WSGROUPS=FAST)
def test_declared_dead_closes_every_socket_with_1013_reaped_and_rejoins(runtime, fake_cluster, monkeypatch, wslog):
    fake = fake_cluster(beats=[False], reaped_here=[make_id(91, 1), make_id(91, 2)])
    rejoins = []

    async def fake_rejoin():
        rejoins.append(runtime.process_id)

    monkeypatch.setattr(runtime, "rejoin", fake_rejoin)
    disconnected = []

    async def fake_run_disconnect(*args):
        disconnected.append(args)

    monkeypatch.setattr(membership, "run_disconnect", fake_run_disconnect)
    socks = [open_socket(runtime, make_id(91, n), group) for n, group in ((1, "chat"), (2, "news"))]
    run_beats(runtime, lambda: len(fake.heartbeats) >= 3)
    assert rejoins == [17]
    for sock, sent in socks:
        assert sock.reaped is True
        assert sent == [
            ACCEPT,
            {"type": "websocket.close", "code": 1013, "reason": "server lost contact with its cluster; reconnect"},
        ]
    assert disconnected == []  # the process that reaped them ran their handlers
    assert any("declared dead" in r.getMessage() and r.levelno == logging.ERROR for r in wslog.records)


@override_settings(WSGROUPS=FAST)
def test_an_exception_in_one_beat_is_logged_and_the_loop_goes_on(runtime, fake_cluster, wslog):
    fake = fake_cluster(beats=[RuntimeError("database gone"), True], reaps=[[(make_id(90, 5), "nobody", "")]])
    run_beats(runtime, lambda: len(fake.reaped_by) >= 2)
    failures = [r for r in wslog.records if r.getMessage() == "wsgroups: heartbeat failed"]
    assert len(failures) == 1
    assert isinstance(failures[0].exc_info[1], RuntimeError)
    # The failed beat stopped before reaping; the following beats went on as usual.
    assert fake.events[:5] == ["beat", "beat", "reap", "beat", "reap"]
    assert runtime.stats["reaped"] == 1


def test_join_starts_the_runtime_once_with_an_inbox_and_the_heartbeat(runtime, monkeypatch):
    starts = []

    async def fake_start(kind, on_ops, duties=()):
        starts.append((kind, on_ops, tuple(duties)))

    monkeypatch.setattr(runtime, "start", fake_start)
    runtime.loop.run_until_complete(join(runtime, "worker"))
    ((kind, on_ops, duties),) = starts
    assert kind == "worker"
    assert isinstance(on_ops, Inbox) and on_ops.runtime is runtime
    assert duties == (heartbeat_loop,)
    runtime._started = True
    runtime.loop.run_until_complete(join(runtime))
    assert len(starts) == 1


@pytest.mark.django_db(transaction=True)
@override_settings(WSGROUPS=FAST)
def test_declared_dead_marks_reaped_only_the_sockets_the_reaper_took(runtime):
    """A socket whose registry row was written after another process reaped this one was
    in nobody's reap list: it must keep its disconnect handler (not be marked reaped)."""
    from wsgroups import cluster
    from wsgroups.models import Connection, Process

    old = runtime.process_id = cluster.register_process("server", "")
    reaper = cluster.register_process("server", "")

    async def send(message):
        pass

    async def open_registered():
        sock = await runtime.new_socket("/ws", send, "127.0.0.1")
        sock.group = "chat"
        sock.accept(dict(ACCEPT), held=True)
        runtime.add(sock)
        await runtime.flush_registry()
        return sock

    first = runtime.loop.run_until_complete(open_registered())
    # This process's heartbeats stall; another member reaps it and runs the handlers it finds.
    Process.objects.filter(pk=old).update(heartbeat_at=cluster.live_cutoff() - timedelta(minutes=1))
    assert cluster.reap_dead_processes(reaper) == [(first.id, "chat", "")]
    # Meanwhile this process, still serving, registers one more socket under its old ID...
    second = runtime.loop.run_until_complete(open_registered())
    assert Connection.objects.get(pk=second.id).state == Connection.State.OPEN
    # ...then learns at its next heartbeat that it was declared dead, closes all and rejoins.
    run_beats(runtime, lambda: runtime.process_id != old)
    assert first.reaped is True  # its handler ran in the reaper
    assert second.reaped is False, "nobody ran or will run the disconnect handler of the socket opened after the reap"
