"""Unit tests of wsgroups.worker: ``runworker`` runs ClusterWorker, which joins the cluster
before listening when it serves wsgroups' channel and not otherwise (the join and
Channels' listening replaced by fakes; the end-to-end test is test_e2e_membership.py)."""

from __future__ import annotations

import asyncio

import pytest
from channels.management.commands import runworker
from channels.worker import Worker

from wsgroups import worker
from wsgroups.transport import WORKER_CHANNEL
from wsgroups.worker import ClusterWorker


def test_runworker_runs_the_cluster_worker() -> None:
    assert runworker.Command.worker_class is ClusterWorker  # installed at app start
    worker.install()  # a second call changes nothing
    assert runworker.Command.worker_class is ClusterWorker


@pytest.mark.parametrize(("channels", "joins"), [([WORKER_CHANNEL], ["worker"]), (["other"], [])])
def test_the_worker_joins_before_listening_only_for_wsgroups_channel(
    monkeypatch: pytest.MonkeyPatch, channels: list[str], joins: list[str]
) -> None:
    order: list[str] = []

    async def start_member(kind: str) -> None:
        order.append(kind)

    async def listen(self: Worker) -> None:
        order.append("listening")

    monkeypatch.setattr(worker, "start_member", start_member)
    monkeypatch.setattr(Worker, "handle", listen)
    asyncio.run(ClusterWorker(application=None, channels=channels, channel_layer=object()).handle())
    assert order == [*joins, "listening"]
