"""The wsgroups admin in-process: registry list, filters, search, read-only views, socket actions.

Sockets are replaced by a recorder here (``wsgroups.admin.WebSocket``); test_e2e_admin.py
drives the same actions against real sockets.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from wsgroups import admin as wsadmin
from wsgroups.exceptions import TransportError
from wsgroups.models import BroadcastSubscription, Connection, Process

CHANGELIST = "/admin/wsgroups/connection/"


@pytest.fixture
def admin_user(db: None) -> User:
    """pytest-django's admin user, without a password: hashing one costs half a second per test."""
    return User.objects.create_superuser("admin", "admin@example.com", password=None)


@dataclass
class Registry:
    live: Process
    dead: Process
    chat_a: Connection
    chat_b: Connection
    echo: Connection
    closed: Connection
    alice: User


@pytest.fixture
def registry(db: None) -> Registry:
    now = timezone.now()
    live = Process.objects.create(hostname="web1", pid=101, kind="server", heartbeat_at=now)
    dead = Process.objects.create(hostname="web2", pid=202, kind="server", heartbeat_at=now - timedelta(minutes=5))
    alice = User.objects.create_user("alice")

    def row(socket_id: int, group: str, process: Process, minutes_ago: int, **extra: Any) -> Connection:
        return Connection.objects.create(
            id=socket_id, group=group, process=process, opened_at=now - timedelta(minutes=minutes_ago), **extra
        )

    return Registry(
        live=live,
        dead=dead,
        chat_a=row(4194305, "chat", live, 4, session_key="sessionkeyaaaa", user=alice, path="/ws/chat/lobby"),
        chat_b=row(4194306, "chat", dead, 3, remote_addr="10.0.0.7"),
        echo=row(4194307, "echo", live, 2),
        closed=row(
            4194308, "echo", live, 1, state=Connection.State.CLOSED, closed_at=now, close_code=1000, path="/ws/old"
        ),
        alice=alice,
    )


@dataclass
class SocketRecorder:
    """Stands in for WebSocket in the admin: records calls, answers from ``results``."""

    calls: list[tuple[str, int, Any]] = field(default_factory=list)
    results: dict[int, bool] = field(default_factory=dict)
    error: TransportError | None = None

    def factory(self, socket_id: int) -> Any:
        recorder = self

        class Recorded:
            def send(self, data: str | bytes) -> bool:
                return recorder.record("send", socket_id, data)

            def disconnect(self, message: str | None = None, code: int = 1000) -> bool:
                return recorder.record("disconnect", socket_id, (code, message))

        return Recorded()

    def record(self, what: str, socket_id: int, args: Any) -> bool:
        if self.error is not None:
            raise self.error
        self.calls.append((what, socket_id, args))
        return self.results.get(socket_id, True)


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> SocketRecorder:
    recorder = SocketRecorder()
    monkeypatch.setattr(wsadmin, "WebSocket", recorder.factory)
    return recorder


def result_ids(response: Any) -> list[int]:
    return [row.pk for row in response.context["cl"].result_list]


def text(response: Any) -> str:
    return html.unescape(response.content.decode())


# --- list, filters, search, summary --------------------------------------------------


def test_changelist_lists_every_row_newest_first_with_columns(admin_client: Client, registry: Registry) -> None:
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert result_ids(response) == [registry.closed.pk, registry.echo.pk, registry.chat_b.pk, registry.chat_a.pk]
    page = text(response)
    # The columns that fit a 1280-pixel window; the close code goes with the state.
    assert response.context["cl"].list_display == [
        "action_checkbox",
        "id",
        "group",
        "state_and_code",
        "user",
        "opened_at",
    ]
    for expected in ("alice", "closed (1000)", "WebSocket ID", "Opened at"):
        assert expected in page
    for elsewhere in ("/ws/chat/lobby", "10.0.0.7", "Remote addr", "Close code"):
        assert elsewhere not in page.split('id="changelist-filter"')[0]


def test_a_socket_page_shows_every_field_the_list_leaves_out(admin_client: Client, registry: Registry) -> None:
    registry.closed.remote_addr, registry.closed.close_reason = "10.0.0.9", "bye now"
    registry.closed.save()
    page = text(admin_client.get(f"{CHANGELIST}{registry.closed.pk}/change/"))
    for expected in ("/ws/old", "10.0.0.9", "Remote addr", "Close code", "1000", "Closed at", "bye now", "Session key"):
        assert expected in page
    assert f"server web1:101 (#{registry.live.pk})" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state__exact=closed", ["closed"]),
        ("state__exact=open", ["echo", "chat_b", "chat_a"]),
        ("group=chat", ["chat_b", "chat_a"]),
        ("process__id__exact={dead}", ["chat_b"]),
    ],
)
def test_filters(admin_client: Client, registry: Registry, query: str, expected: list[str]) -> None:
    response = admin_client.get(f"{CHANGELIST}?{query.format(dead=registry.dead.pk)}")
    assert response.status_code == 200
    assert result_ids(response) == [getattr(registry, name).pk for name in expected]


def test_process_filter_offers_only_processes_with_sockets(admin_client: Client, registry: Registry) -> None:
    unused = Process.objects.create(hostname="idle-host", pid=9, heartbeat_at=timezone.now())
    page = text(admin_client.get(CHANGELIST))
    filters = page[page.index('id="changelist-filter"') :]
    assert f"process__id__exact={registry.live.pk}" in filters
    assert f"process__id__exact={unused.pk}" not in filters


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("4194306", ["chat_b"]),
        ("419430", []),  # IDs match whole, not by prefix
        ("sessionkeyaaaa", ["chat_a"]),
        ("ali", ["chat_a"]),
        ("no-such-thing", []),
    ],
)
def test_search_by_id_session_key_and_username(
    admin_client: Client, registry: Registry, term: str, expected: list[str]
) -> None:
    response = admin_client.get(CHANGELIST, {"q": term})
    assert response.status_code == 200
    assert result_ids(response) == [getattr(registry, name).pk for name in expected]


def test_summary_counts_open_sockets_per_group_and_process(admin_client: Client, registry: Registry) -> None:
    response = admin_client.get(CHANGELIST)
    summary = response.context["socket_summary"]
    assert summary["total"] == 3
    assert [(group["name"], group["count"]) for group in summary["groups"]] == [("chat", 2), ("echo", 1)]
    assert [(process["name"], process["live"], process["count"]) for process in summary["processes"]] == [
        (f"server web1:101 (#{registry.live.pk})", True, 2),
        (f"server web2:202 (#{registry.dead.pk})", False, 1),
    ]
    page = text(response)
    assert "Open sockets: 3" in page
    assert "?group=chat&amp;state__exact=open" in response.content.decode()
    assert "no (sockets not reaped yet)" in page


def test_summary_follows_its_own_links(admin_client: Client, registry: Registry) -> None:
    summary = admin_client.get(CHANGELIST).context["socket_summary"]
    assert result_ids(admin_client.get(summary["processes"][0]["url"])) == [registry.echo.pk, registry.chat_a.pk]


# --- rooms (asked of the live server processes) -----------------------------------------


class FakeRoom:
    """Stands in for Room in the admin: members by room name."""

    members: dict[str, list[int]] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    def sockets(self) -> list[Any]:
        return [type("WS", (), {"id": socket_id})() for socket_id in self.members.get(self.name, [])]


@pytest.fixture
def rooms(monkeypatch: pytest.MonkeyPatch, registry: Registry) -> dict[str, list[int]]:
    members = {"lobby": [registry.chat_a.pk, registry.echo.pk], "quiet": [registry.chat_a.pk]}
    monkeypatch.setattr(FakeRoom, "members", members)
    monkeypatch.setattr(wsadmin, "Room", FakeRoom)
    monkeypatch.setattr(
        "wsgroups.status.room_counts", lambda channels: {name: len(ids) for name, ids in sorted(members.items())}
    )
    return members


def test_summary_and_filter_list_the_rooms(admin_client: Client, registry: Registry, rooms: Any) -> None:
    response = admin_client.get(CHANGELIST)
    summary = response.context["socket_summary"]
    assert [(room["name"], room["count"]) for room in summary["rooms"]] == [("lobby", 2), ("quiet", 1)]
    page = text(response)
    filters = page[page.index('id="changelist-filter"') :]
    assert "lobby (2)" in filters and "quiet (1)" in filters
    assert result_ids(admin_client.get(summary["rooms"][0]["url"])) == [registry.echo.pk, registry.chat_a.pk]
    assert result_ids(admin_client.get(CHANGELIST, {"room": "quiet"})) == [registry.chat_a.pk]
    assert result_ids(admin_client.get(CHANGELIST, {"room": "nobody"})) == []


def test_a_bad_room_name_in_the_filter_lists_nothing_and_says_why(
    admin_client: Client, registry: Registry, rooms: Any
) -> None:
    response = admin_client.get(CHANGELIST, {"room": "x" * 201}, follow=True)
    assert result_ids(response) == []
    assert "Room filter: room is 201 characters long" in text(response)


def test_summary_says_when_rooms_cannot_be_asked(admin_client: Client, registry: Registry, monkeypatch: Any) -> None:
    def room_counts(channels: Any) -> dict[str, int]:
        raise TransportError("the channel layer is unreachable")

    monkeypatch.setattr("wsgroups.status.room_counts", room_counts)
    response = admin_client.get(CHANGELIST)
    assert "Rooms unknown: the channel layer is unreachable" in text(response)


def test_a_socket_page_shows_its_rooms(admin_client: Client, registry: Registry, monkeypatch: Any) -> None:
    Process.objects.filter(pk=registry.live.pk).update(channel_name="chan-web1")

    class Socket:
        def __init__(self, socket_id: int) -> None:
            self.id = socket_id

        def rooms(self) -> set[str]:
            if self.id == registry.echo.pk:
                raise TransportError("no answer")
            return {"lobby", "quiet"} if self.id == registry.chat_a.pk else set()

    monkeypatch.setattr(wsadmin, "WebSocket", Socket)
    page = text(admin_client.get(f"{CHANGELIST}{registry.chat_a.pk}/change/"))
    assert "Rooms:" in page and "lobby, quiet" in page
    assert "unknown: no answer" in text(admin_client.get(f"{CHANGELIST}{registry.echo.pk}/change/"))
    closed = text(admin_client.get(f"{CHANGELIST}{registry.closed.pk}/change/"))
    assert "Rooms:" in closed
    unreachable = text(admin_client.get(f"{CHANGELIST}{registry.chat_b.pk}/change/"))  # its process has no channel
    assert "unknown: its process cannot be reached over the channel layer" in unreachable


# --- read-only and access ----------------------------------------------------------------


def test_registry_is_read_only(admin_client: Client, registry: Registry) -> None:
    change_url = f"{CHANGELIST}{registry.chat_a.pk}/change/"
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.get(f"{CHANGELIST}{registry.chat_a.pk}/delete/").status_code == 403
    response = admin_client.get(change_url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "/ws/chat/lobby" in page
    assert 'name="group"' not in page and 'name="_save"' not in page
    assert admin_client.post(change_url, {"group": "hacked"}).status_code == 403
    assert Connection.objects.get(pk=registry.chat_a.pk).group == "chat"
    assert "delete_selected" not in page and "delete_selected" not in admin_client.get(CHANGELIST).content.decode()


def test_non_staff_is_sent_to_login(client: Client, registry: Registry) -> None:
    client.force_login(registry.alice)
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


def test_anonymous_is_sent_to_login(client: Client, registry: Registry) -> None:
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_view_permission_alone_shows_the_list_but_no_actions(client: Client, registry: Registry) -> None:
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(viewer)
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert len(result_ids(response)) == 4
    assert "send_message" not in response.content.decode()


# --- actions ---------------------------------------------------------------------------


def choose(admin_client: Client, action: str, ids: list[int]) -> Any:
    """The first POST: the action chosen on the changelist (the intermediate page answers)."""
    return admin_client.post(CHANGELIST, {"action": action, "_selected_action": ids, "index": "0"})


def apply(admin_client: Client, action: str, ids: list[int], **fields: Any) -> Any:
    """The second POST: the intermediate form submitted."""
    data = {"action": action, "_selected_action": ids, "apply": "Go", **fields}
    return admin_client.post(CHANGELIST, data, follow=True)


def test_send_form_page_lists_selection_and_carries_it(
    admin_client: Client, registry: Registry, sockets: SocketRecorder
) -> None:
    ids = [registry.chat_a.pk, registry.closed.pk]
    response = choose(admin_client, "send_message", ids)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="message"' in page and 'name="kind"' in page
    assert "of which 1 already closed" in page
    for socket_id in ids:
        assert f'name="_selected_action" value="{socket_id}"' in page
    assert 'name="action" value="send_message"' in page
    assert "csrfmiddlewaretoken" in page
    assert sockets.calls == []


def test_send_text_reports_sent_and_already_dead(
    admin_client: Client, registry: Registry, sockets: SocketRecorder
) -> None:
    sockets.results[registry.chat_b.pk] = False
    ids = [registry.chat_a.pk, registry.chat_b.pk, registry.echo.pk, registry.closed.pk]
    response = apply(admin_client, "send_message", ids, kind="text", message=" hello\n")
    assert response.redirect_chain[-1][0] == CHANGELIST
    assert sockets.calls == [("send", socket_id, " hello\n") for socket_id in ids[:3]]
    assert "Message sent to 2 sockets; 2 were already dead." in text(response)


def test_send_hex_sends_bytes(admin_client: Client, registry: Registry, sockets: SocketRecorder) -> None:
    response = apply(admin_client, "send_message", [registry.echo.pk], kind="hex", message="48 69\n00ff")
    assert sockets.calls == [("send", registry.echo.pk, b"Hi\x00\xff")]
    assert "Message sent to 1 socket; 0 were already dead." in text(response)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "hex", "message": "4g"}, "Not hexadecimal bytes"),
        ({"kind": "hex", "message": "123"}, "Not hexadecimal bytes"),
        ({"kind": "text", "message": ""}, "This field is required."),
        ({"kind": "morse", "message": "x"}, "Select a valid choice."),
    ],
)
def test_send_form_errors_are_shown_and_nothing_is_sent(
    admin_client: Client, registry: Registry, sockets: SocketRecorder, fields: dict[str, str], error: str
) -> None:
    response = apply(admin_client, "send_message", [registry.echo.pk], **fields)
    assert response.redirect_chain == []
    assert response.status_code == 200
    assert error in text(response)
    assert "Please correct the errors below." in text(response)
    assert f'name="_selected_action" value="{registry.echo.pk}"' in response.content.decode()
    assert sockets.calls == []


def test_disconnect_form_offers_code_1000(admin_client: Client, registry: Registry, sockets: SocketRecorder) -> None:
    page = choose(admin_client, "disconnect_sockets", [registry.echo.pk]).content.decode()
    assert 'name="code" value="1000"' in page
    assert 'name="reason"' in page
    assert sockets.calls == []


def test_disconnect_reports_closed_and_already_dead(
    admin_client: Client, registry: Registry, sockets: SocketRecorder
) -> None:
    ids = [registry.chat_a.pk, registry.echo.pk, registry.closed.pk]
    response = apply(admin_client, "disconnect_sockets", ids, code="4000", reason="maintenance")
    assert sockets.calls == [("disconnect", socket_id, (4000, "maintenance")) for socket_id in ids[:2]]
    assert "Closed 2 sockets; 1 was already dead." in text(response)


def test_disconnect_without_reason_sends_none(
    admin_client: Client, registry: Registry, sockets: SocketRecorder
) -> None:
    apply(admin_client, "disconnect_sockets", [registry.echo.pk], code="1000", reason="")
    assert sockets.calls == [("disconnect", registry.echo.pk, (1000, None))]


def test_only_dead_selected_is_a_warning(admin_client: Client, registry: Registry, sockets: SocketRecorder) -> None:
    response = apply(admin_client, "disconnect_sockets", [registry.closed.pk], code="1000", reason="")
    assert sockets.calls == []
    messages = [(m.level_tag, m.message) for m in response.context["messages"]]
    assert messages == [("warning", "Closed 0 sockets; 1 was already dead.")]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"code": "1005", "reason": ""}, "code 1005 cannot be sent in a close frame"),
        ({"code": "999", "reason": ""}, "code 999 cannot be sent in a close frame"),
        ({"code": "abc", "reason": ""}, "Enter a whole number."),
        ({"code": "1000", "reason": "é" * 62}, "message is 124 UTF-8 bytes"),
    ],
)
def test_disconnect_form_errors_are_shown_and_nothing_is_closed(
    admin_client: Client, registry: Registry, sockets: SocketRecorder, fields: dict[str, str], error: str
) -> None:
    response = apply(admin_client, "disconnect_sockets", [registry.echo.pk], **fields)
    assert response.redirect_chain == []
    assert error in text(response)
    assert sockets.calls == []


def test_transport_error_is_reported_not_a_server_error(
    admin_client: Client, registry: Registry, sockets: SocketRecorder
) -> None:
    sockets.error = TransportError("the channel layer is unreachable; the message was not sent")
    response = apply(admin_client, "send_message", [registry.echo.pk], kind="text", message="hi")
    assert response.status_code == 200
    messages = [(m.level_tag, m.message) for m in response.context["messages"]]
    assert messages == [
        (
            "error",
            "Stopped: the channel layer is unreachable; the message was not sent. "
            "0 were sent before that; the rest were not tried.",
        )
    ]


def test_actions_need_the_change_permission(client: Client, registry: Registry, sockets: SocketRecorder) -> None:
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(viewer)
    data = {"action": "send_message", "_selected_action": [registry.echo.pk], "apply": "Go", "kind": "text"}
    response = client.post(CHANGELIST, {**data, "message": "hi"}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == []
    assert sockets.calls == []
    assert "Message sent" not in text(response)


# --- processes and subscriptions ---------------------------------------------------------


def test_process_list_shows_liveness_and_heartbeat_age(admin_client: Client, registry: Registry) -> None:
    stopped = Process.objects.create(
        hostname="web3", pid=303, kind="worker", heartbeat_at=timezone.now(), stopped_at=timezone.now()
    )
    response = admin_client.get("/admin/wsgroups/process/")
    assert response.status_code == 200
    model_admin = response.context["cl"].model_admin
    assert model_admin.live(registry.live) is True
    assert model_admin.live(registry.dead) is False
    assert model_admin.live(stopped) is False
    assert model_admin.heartbeat_age(registry.dead).startswith("30")  # five minutes
    page = text(response)
    assert "web1" in page and "web3" in page and "Heartbeat age" in page
    assert page.count('alt="True"') == 1 and page.count('alt="False"') == 2


def test_process_list_has_few_columns_and_the_page_the_rest(admin_client: Client, registry: Registry) -> None:
    registry.live.limit_events = {"rate_limited": 3}
    registry.live.messages_in_per_s = 12.5
    registry.live.save()
    response = admin_client.get("/admin/wsgroups/process/")
    assert list(response.context["cl"].list_display) == ["id", "kind", "host", "live", "heartbeat_age", "started_at"]
    assert "web1:101" in text(response)
    assert "rate_limited" not in text(response)
    page = text(admin_client.get(f"/admin/wsgroups/process/{registry.live.pk}/change/"))
    for expected in ("Refused or closed by limits", "3 rate_limited", "Stopped at", "Heartbeat age", "12.5", "web1"):
        assert expected in page
    assert 'alt="True"' in page


def test_process_admin_is_read_only(admin_client: Client, registry: Registry) -> None:
    assert admin_client.get("/admin/wsgroups/process/add/").status_code == 403
    assert admin_client.get(f"/admin/wsgroups/process/{registry.live.pk}/delete/").status_code == 403
    assert (
        'name="hostname"'
        not in admin_client.get(f"/admin/wsgroups/process/{registry.live.pk}/change/").content.decode()
    )


def test_subscriptions_list_counts_and_search(admin_client: Client, db: None) -> None:
    BroadcastSubscription.objects.create(websocket_id=4194305, num_broadcasted=17)
    BroadcastSubscription.objects.create(websocket_id=4194306, num_broadcasted=3)
    response = admin_client.get("/admin/wsgroups/broadcastsubscription/")
    assert response.status_code == 200
    assert [(row.websocket_id, row.num_broadcasted) for row in response.context["cl"].result_list] == [
        (4194305, 17),
        (4194306, 3),
    ]
    assert "Messages broadcast" in text(response)
    found = admin_client.get("/admin/wsgroups/broadcastsubscription/", {"q": "4194306"})
    assert [row.websocket_id for row in found.context["cl"].result_list] == [4194306]


def test_summary_and_filter_list_only_the_largest_rooms(
    admin_client: Client, registry: Registry, monkeypatch: Any
) -> None:
    many = {f"room-{n:03d}": n for n in range(1, wsadmin.ROOMS_LISTED + 6)}
    monkeypatch.setattr("wsgroups.status.room_counts", lambda channels: many)
    response = admin_client.get(CHANGELIST)
    listed = [room["name"] for room in response.context["socket_summary"]["rooms"]]
    assert listed == [f"room-{n:03d}" for n in range(wsadmin.ROOMS_LISTED + 5, 5, -1)]
    page = text(response)
    assert f"The {wsadmin.ROOMS_LISTED} largest of {wsadmin.ROOMS_LISTED + 5} rooms" in page
    filters = page[page.index('id="changelist-filter"') :]
    assert "room-035 (35)" in filters and "room-005 (5)" not in filters
