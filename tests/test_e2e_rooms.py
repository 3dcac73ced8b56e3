"""Rooms across a daphne and a uvicorn server, driven from views, handlers and the shell.

Sockets join from the upgrade view, from a handler and from a separate process
(``manage.py wsctl``); membership, presence and broadcasts are seen from every process;
it ends with the socket, however it ended, a killed server included.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import ROOT, Cluster, Server
from .wsclient import close_of

pytestmark = pytest.mark.e2e

ONE_REDIS = pytest.mark.parametrize("cluster", ["redis"], indirect=True)


async def _open(
    server: Server, group: str = "rooms", join: Sequence[str] = (), meta: Any = None, cookie: str | None = None
) -> tuple[ClientConnection, int]:
    query = urllib.parse.urlencode([*(("join", name) for name in join), ("meta", json.dumps(meta))])
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else None
    ws = await connect(f"{server.url}/ws/{group}?{query}", max_size=None, additional_headers=headers)
    hello = json.loads(await ws.recv())
    assert hello["joined"] == dict.fromkeys(join, True)
    return ws, int(hello["id"])


async def _ctl(cluster: Cluster, *args: str) -> Any:
    return await asyncio.to_thread(cluster.ctl, *args)


async def _ask(ws: ClientConnection, command: str) -> Any:
    await ws.send(command)
    return json.loads(await asyncio.wait_for(ws.recv(), 20))


async def _nothing_more(ws: ClientConnection) -> None:
    """Nothing was queued for ``ws`` before the answer it asks for now."""
    await ws.send("rooms")
    answer = await asyncio.wait_for(ws.recv(), 20)
    assert isinstance(answer, str) and answer.startswith('{"rooms": '), answer


async def _rooms_of(ws: ClientConnection) -> list[str]:
    await ws.send("rooms")
    return list(json.loads(await asyncio.wait_for(ws.recv(), 20))["rooms"])


@ONE_REDIS
def test_join_leave_presence_and_broadcast_from_every_kind_of_process(cluster: Cluster) -> None:
    daphne, uvicorn = cluster.servers

    async def scenario() -> None:
        a1, a1_id = await _open(daphne, join=["lobby"], meta={"nick": "ann"})  # joined in the view
        a2, a2_id = await _open(daphne)
        b1, b1_id = await _open(uvicorn)
        b2, _ = await _open(uvicorn)
        assert await _ask(b1, 'join:lobby:{"nick": "bob"}') == {"joined": True}  # from a handler
        assert await _ctl(cluster, "room-join", str(a2_id), "lobby", '{"nick": "cat"}') is True  # from the shell
        assert await _ctl(cluster, "room-rooms", str(a2_id)) == ["lobby"]
        assert await _rooms_of(b1) == ["lobby"]
        expected = {str(a1_id): {"nick": "ann"}, str(a2_id): {"nick": "cat"}, str(b1_id): {"nick": "bob"}}
        assert await _ctl(cluster, "room-presence", "lobby") == expected
        assert await _ask(b2, "presence:lobby") == {"presence": expected}  # from a handler on the other server
        assert await _ctl(cluster, "room-sockets", "lobby") == sorted([a1_id, a2_id, b1_id])

        # From the shell, excluding one member: the count is of the others.
        assert await _ctl(cluster, "room-broadcast", "lobby", "hello lobby", "--exclude", str(a1_id)) == 2
        for ws in (a2, b1):
            assert await asyncio.wait_for(ws.recv(), 20) == "hello lobby"
        # From a handler, to the others: across both servers.
        assert await _ask(b1, "say:lobby:hi from bob") == {"said": 2}
        for ws in (a1, a2):
            assert await asyncio.wait_for(ws.recv(), 20) == "hi from bob"
        for ws in (a1, b1, b2):
            await _nothing_more(ws)  # excluded, sender, non-member: nothing came

        # Joining again changes the meta; leaving twice is False the second time.
        assert await _ctl(cluster, "room-join", str(b1_id), "lobby", '{"nick": "bobby"}') is True
        assert (await _ctl(cluster, "room-presence", "lobby"))[str(b1_id)] == {"nick": "bobby"}
        assert await _ctl(cluster, "room-leave", str(a2_id), "lobby") is True
        assert await _ctl(cluster, "room-leave", str(a2_id), "lobby") is False
        assert await _ask(a1, "leave:nowhere") == {"left": False}
        assert sorted(await _ctl(cluster, "room-presence", "lobby")) == sorted([str(a1_id), str(b1_id)])
        assert await _ctl(cluster, "room-broadcast", "lobby", "after the leave") == 2

        # Room.disconnect: code and reason, members only.
        assert await _ctl(cluster, "room-disconnect", "lobby", "room closed", "--code", "4010") == 2
        assert await asyncio.wait_for(a1.recv(), 20) == "after the leave"
        assert await asyncio.wait_for(b1.recv(), 20) == "after the leave"
        assert await close_of(a1) == (4010, "room closed")
        assert await close_of(b1) == (4010, "room closed")
        assert await _ctl(cluster, "room-sockets", "lobby") == []
        await _nothing_more(a2)
        await _nothing_more(b2)
        for ws in (a2, b2):
            await ws.close()

    asyncio.run(scenario())


@ONE_REDIS
def test_disconnect_handler_lists_the_rooms_then_membership_ends(cluster: Cluster) -> None:
    daphne, uvicorn = cluster.servers

    async def scenario() -> None:
        for server, close in ((daphne, "client"), (uvicorn, "server")):
            ws, socket_id = await _open(server, join=["x", "y"], meta={"n": 1})
            other, other_id = await _open(server, join=["x"])
            if close == "client":
                await ws.close()
            else:
                assert await _ctl(cluster, "disconnect", str(socket_id), "bye", "--code", "4000") is True
                assert await close_of(ws) == (4000, "bye")
            rows = await asyncio.to_thread(
                server.wait_for_events,
                lambda rows, i=socket_id: any(r.get("id") == i for r in rows if r["event"] == "disconnect"),
                20,
            )
            [gone] = [row for row in rows if row["event"] == "disconnect" and row["id"] == socket_id]
            assert gone["rooms"] == ["x", "y"]
            assert await _ctl(cluster, "room-presence", "x") == {str(other_id): None}
            assert await _ctl(cluster, "room-sockets", "y") == []
            assert await _ctl(cluster, "room-rooms", str(socket_id)) == []
            # A dead socket cannot join, from the shell or from another socket's handler.
            assert await _ctl(cluster, "room-join", str(socket_id), "x") is False
            assert await _ctl(cluster, "room-broadcast", "x", "still here") == 1
            assert await asyncio.wait_for(other.recv(), 20) == "still here"
            await other.close()

    asyncio.run(scenario())


@ONE_REDIS
def test_dropped_connections_and_a_shutdown_end_membership_after_the_handler_saw_it(cluster: Cluster) -> None:
    daphne, uvicorn = cluster.servers

    async def scenario() -> None:
        dropped, dropped_id = await _open(uvicorn, join=["ends"])
        stopped = [await _open(daphne, join=["ends", "more"]) for _ in range(2)]
        kept, kept_id = await _open(uvicorn, join=["ends"])
        dropped.transport.abort()  # TCP gone without a close frame
        rows = await asyncio.to_thread(
            uvicorn.wait_for_events, lambda rows: any(r.get("id") == dropped_id for r in rows), 20
        )
        assert [r["rooms"] for r in rows if r.get("id") == dropped_id] == [["ends"]]
        await asyncio.to_thread(daphne.stop, signal.SIGTERM)  # every client gets 1001, every handler runs
        for ws, _ in stopped:
            assert (await close_of(ws))[0] == 1001
        gone = {r["id"]: r["rooms"] for r in daphne.events("disconnect")}
        assert gone == {socket_id: ["ends", "more"] for _, socket_id in stopped}
        assert await _ctl(cluster, "room-presence", "ends") == {str(kept_id): None}
        assert await _ctl(cluster, "room-sockets", "more") == []
        await kept.close()

    asyncio.run(scenario())


@ONE_REDIS
def test_500_room_broadcasts_from_one_sender_arrive_in_order(cluster: Cluster) -> None:
    async def scenario() -> None:
        members = [await _open(server, join=["ordered"]) for server in cluster.servers for _ in range(2)]
        counts = await _ctl(cluster, "room-broadcast", "ordered", "m{i}", "--count", "500")
        assert counts == [len(members)] * 500
        for ws, socket_id in members:
            received = [await asyncio.wait_for(ws.recv(), 30) for _ in range(500)]
            assert received == [f"m{i}" for i in range(500)], socket_id
            await ws.close()

    asyncio.run(scenario())


@ONE_REDIS
def test_a_users_tabs_on_both_servers_are_in_the_users_room(cluster: Cluster) -> None:
    ann = cluster.ctl("user-session", "ann")
    bob = cluster.ctl("user-session", "bob")

    async def scenario() -> None:
        tab1, tab1_id = await _open(cluster.servers[0], cookie=ann["session_key"])
        tab2, tab2_id = await _open(cluster.servers[1], cookie=ann["session_key"])
        other, _ = await _open(cluster.servers[1], cookie=bob["session_key"])
        anonymous, _ = await _open(cluster.servers[0])
        assert await _rooms_of(tab1) == [f"wsgroups.user:{ann['pk']}"]
        assert await _ctl(cluster, "user-broadcast", "ann", "to every tab of ann") == 2
        for tab in (tab1, tab2):
            assert await asyncio.wait_for(tab.recv(), 20) == "to every tab of ann"
        await _nothing_more(other)
        await _nothing_more(anonymous)
        assert sorted(await _ctl(cluster, "room-sockets", f"wsgroups.user:{ann['pk']}")) == sorted([tab1_id, tab2_id])
        for ws in (tab1, tab2, other, anonymous):
            await ws.close()

    asyncio.run(scenario())


@ONE_REDIS
def test_a_killed_servers_members_leave_every_room_and_the_others_stay(cluster: Cluster) -> None:
    daphne, uvicorn = cluster.servers

    async def scenario() -> None:
        doomed = [await _open(daphne, join=["crash", "other"]) for _ in range(3)]
        # Rooms changed after the upgrade, from a handler and from the shell, are recorded too.
        assert await _ask(doomed[0][0], "join:late") == {"joined": True}
        assert await _ask(doomed[1][0], "leave:other") == {"left": True}
        assert await _ctl(cluster, "room-join", str(doomed[2][1]), "from-shell") is True
        kept, kept_id = await _open(uvicorn, join=["crash"], meta="stays")
        assert len(await _ctl(cluster, "room-sockets", "crash")) == 4
        # The registry records room changes in batches a few milliseconds apart (see the README).
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        daphne.stop(signal.SIGKILL)
        # PROCESS_TIMEOUT is 4 s in the tests' settings; until then a query waits QUERY_TIMEOUT (5 s)
        # for the dead server before leaving it out; each wsctl takes a few seconds to start.
        deadline = killed_at + 4 + 5 + 15
        while (presence := await _ctl(cluster, "room-presence", "crash")) != {str(kept_id): "stays"}:
            assert time.monotonic() < deadline, presence
        assert await _ctl(cluster, "room-sockets", "other") == []
        assert await _ctl(cluster, "room-broadcast", "crash", "survivor") == 1
        assert await asyncio.wait_for(kept.recv(), 20) == "survivor"
        # The surviving server reaped the dead one's sockets: their disconnect handler ran
        # there, and ws.rooms() listed the rooms each socket was in when its process died.
        doomed_ids = {socket_id for _, socket_id in doomed}
        rows = await asyncio.to_thread(
            uvicorn.wait_for_events,
            lambda rows: doomed_ids <= {r.get("id") for r in rows if r["event"] == "disconnect"},
            20,
        )
        reaped = {row["id"]: row["rooms"] for row in rows if row["event"] == "disconnect" and row["id"] in doomed_ids}
        assert reaped == {
            doomed[0][1]: ["crash", "late", "other"],
            doomed[1][1]: ["crash"],
            doomed[2][1]: ["crash", "from-shell", "other"],
        }
        assert await _rooms_of(kept) == ["crash"]
        for ws, _ in doomed:
            ws.transport.abort()
        await kept.close()

    asyncio.run(scenario())


@ONE_REDIS
def test_invalid_room_names_are_refused_with_value_error(cluster: Cluster) -> None:
    async def scenario() -> None:
        ws, socket_id = await _open(cluster.servers[1])
        for bad in ("", "x" * 201, "tab\there"):
            with pytest.raises(RuntimeError, match="ValueError"):
                await _ctl(cluster, "room-join", str(socket_id), bad)
        answer = await _ask(ws, "join:" + "y" * 201)
        assert answer == {"error": "ValueError: name is 201 characters long; a room name has at most 200"}
        await ws.close()

    asyncio.run(scenario())


@ONE_REDIS
def test_wsstatus_counts_every_rooms_live_members_on_both_servers(cluster: Cluster) -> None:
    async def scenario() -> None:
        opened = [
            await _open(cluster.servers[0], join=["status-a", "status-b"]),
            await _open(cluster.servers[1], join=["status-a"]),
            await _open(cluster.servers[1]),
        ]
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "manage.py", "wsstatus", "--json"],
            cwd=ROOT,
            env=cluster.env,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)["rooms"] == {"status-a": 2, "status-b": 1}
        text = await asyncio.to_thread(
            subprocess.run, [sys.executable, "manage.py", "wsstatus"], cwd=ROOT, env=cluster.env, capture_output=True
        )
        assert "Rooms: 2\n  status-a  2\n  status-b  1" in text.stdout.decode()
        for ws, _ in opened:
            await ws.close()

    asyncio.run(scenario())
