"""Unit tests of wsgroups.background: the member joins on a thread of its own, reports a
failed join to its starter, and leaves the cluster when stopped (join and the runtime
replaced by fakes; the end-to-end reaping is in test_e2e_membership.py)."""

from __future__ import annotations

import threading

import pytest

from wsgroups import background
from wsgroups.background import BackgroundMember


class FakeRuntime:
    def __init__(self) -> None:
        self.process_id: int | None = None
        self.left = False
        self.joined_on: threading.Thread | None = None

    async def leave(self) -> None:
        self.left = True


def test_start_joins_as_kind_on_its_own_thread_and_stop_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRuntime()
    joins: list[str] = []

    async def join(runtime: FakeRuntime, kind: str) -> None:
        joins.append(kind)
        runtime.joined_on = threading.current_thread()
        runtime.process_id = 42

    monkeypatch.setattr(background, "get_runtime", lambda: fake)
    monkeypatch.setattr(background, "join", join)
    member = BackgroundMember("broadcaster")
    with pytest.raises(RuntimeError, match="has not started"):
        member.process_id  # noqa: B018
    assert member.start(timeout=5) is fake
    assert joins == ["broadcaster"] and member.process_id == 42
    assert fake.joined_on is not threading.current_thread() and fake.joined_on is not None
    assert fake.joined_on.daemon and fake.joined_on.name == "wsgroups-broadcaster"
    fake.process_id = 43  # rejoined after being declared dead
    assert member.process_id == 43
    member.stop(timeout=5)
    assert fake.left and not fake.joined_on.is_alive()
    member.stop(timeout=5)  # a second stop does nothing


def test_a_failed_join_is_raised_by_start(monkeypatch: pytest.MonkeyPatch) -> None:
    async def join(runtime: FakeRuntime, kind: str) -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(background, "get_runtime", FakeRuntime)
    monkeypatch.setattr(background, "join", join)
    member = BackgroundMember("broadcaster")
    with pytest.raises(ConnectionError, match="database unreachable"):
        member.start(timeout=5)
    member.stop(timeout=5)  # nothing to leave
