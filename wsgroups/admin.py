"""Django admin for wsgroups: inspect the socket registry, the processes and the broadcast
subscriptions, and send to or disconnect sockets held by any process. Rooms are not in the
database: the room filter, the rooms on a socket's page and the room counts in the summary
are asked of the live server processes.

The registry and the process list are written by the servers only, so their admins are
read-only. Their lists show the columns that tell rows apart and fit a 1280-pixel window
beside the admin's sidebars; every other field is on each row's page. The socket actions
need the ``wsgroups.change_connection`` permission (every superuser has it): viewing a
socket is not enough to speak to it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from .codes import CloseCode
from .exceptions import TransportError
from .handshake import check_close
from .models import BroadcastSubscription, Connection, Process
from .room import Room
from .room_table import check_room_name
from .status import collect_status, format_limit_events, is_live, with_rooms
from .websocket import WebSocket

__all__ = ["BroadcastSubscriptionAdmin", "ConnectionAdmin", "DisconnectForm", "ProcessAdmin", "SendMessageForm"]

if TYPE_CHECKING:
    BroadcastSubscriptionModelAdmin = admin.ModelAdmin[BroadcastSubscription]
    ConnectionModelAdmin = admin.ModelAdmin[Connection]
    ProcessModelAdmin = admin.ModelAdmin[Process]
else:  # ModelAdmin is generic for type checkers only
    BroadcastSubscriptionModelAdmin = ConnectionModelAdmin = ProcessModelAdmin = admin.ModelAdmin

ACTION_TEMPLATE = "admin/wsgroups/connection/socket_action.html"
#: Rooms listed in the summary and offered by the room filter (the largest first; every
#: user's room counts as one); any other works as ``?room=<name>``.
ROOMS_LISTED = 30


def largest_rooms(rooms: dict[str, int]) -> list[tuple[str, int]]:
    """The ``ROOMS_LISTED`` rooms with the most live members (then by name)."""
    return sorted(rooms.items(), key=lambda item: (-item[1], item[0]))[:ROOMS_LISTED]


#: Sockets listed by name on an action's form page (all selected ones are acted on).
LISTED_ON_ACTION_PAGE = 50


class SendMessageForm(forms.Form):
    """The message of "Send a message…": text as typed, or binary given as hexadecimal digits."""

    kind = forms.ChoiceField(
        choices=[("text", "Text frame"), ("hex", "Binary frame, given as hexadecimal")],
        initial="text",
        widget=forms.RadioSelect,
    )
    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        strip=False,
        help_text='For a binary frame, pairs of hexadecimal digits; spaces are allowed ("48 69 0a").',
    )

    def clean(self) -> dict[str, Any]:
        cleaned = self.cleaned_data
        if cleaned.get("kind") == "hex" and "message" in cleaned:
            try:
                cleaned["payload"] = bytes.fromhex(cleaned["message"])
            except ValueError as exc:
                self.add_error("message", f"Not hexadecimal bytes ({exc}). Enter pairs of digits such as 48 69 0a.")
        elif "message" in cleaned:
            cleaned["payload"] = cleaned["message"]
        return cleaned

    def payload(self) -> str | bytes:
        """The frame to send: ``str`` for text, ``bytes`` for binary. Only after ``is_valid()``."""
        payload: str | bytes = self.cleaned_data["payload"]
        return payload


class DisconnectForm(forms.Form):
    """Close code and reason of "Disconnect…", held to what a close frame may carry."""

    code = forms.IntegerField(
        initial=int(CloseCode.NORMAL), help_text="1000 (normal), 1001-1003, 1007-1009, 1011-1014 or 3000-4999."
    )
    reason = forms.CharField(
        required=False, strip=False, help_text="Optional; at most 123 UTF-8 bytes. The client sees it."
    )

    def clean_code(self) -> int:
        code = self.cleaned_data["code"]
        try:
            return check_close(code, None)[0]
        except (TypeError, ValueError) as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"]
        try:
            return check_close(int(CloseCode.NORMAL), reason)[1]
        except (TypeError, ValueError) as exc:
            raise forms.ValidationError(str(exc)) from None


def _sockets(count: int) -> str:
    return f"{count} socket" if count == 1 else f"{count} sockets"


def _were(count: int) -> str:
    return f"{count} was" if count == 1 else f"{count} were"


class ReadOnlyAdminMixin:
    """Rows that only the system writes: viewable, never added, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RoomFilter(admin.SimpleListFilter):
    """Sockets that are live members of a room, asked of every live server process."""

    title = "room"
    parameter_name = "room"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        rooms = with_rooms(collect_status()).rooms or {}  # none when the processes cannot be asked
        return [(room, f"{room} ({count})") for room, count in largest_rooms(rooms)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Connection]) -> QuerySet[Connection]:
        name = self.value()
        if name is None:
            return queryset
        try:
            ids = [ws.id for ws in Room(check_room_name(name, "room")).sockets()]
        except (ValueError, TransportError) as exc:
            messages.error(request, f"Room filter: {exc}")
            ids = []
        return queryset.filter(pk__in=ids)


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdminMixin, ConnectionModelAdmin):
    """The socket registry, read-only, with a live summary and actions that reach any process."""

    list_display = ("id", "group", "state_and_code", "user", "opened_at")
    fieldsets = (
        (None, {"fields": ("id", "group", "state", "path", "subprotocol", "process", "rooms")}),
        ("Client", {"fields": ("user", "remote_addr", "session_key")}),
        ("Lifetime", {"fields": ("opened_at", "closed_at", "close_code", "close_reason")}),
    )
    list_filter = ("group", "state", RoomFilter, ("process", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("rooms",)
    # id and session key match exactly: partial IDs and keys would only find unrelated sockets.
    search_fields = ("id__exact", "session_key__exact", "user__username")
    search_help_text = "Exact WebSocket ID or session key, or part of a username."
    ordering = ("-opened_at",)
    list_select_related = ("user", "process")
    actions = ("send_message", "disconnect_sockets")

    @admin.display(description="state", ordering="state")
    def state_and_code(self, connection: Connection) -> str:
        """``open``, or ``closed (1001)`` with the close code the registry recorded."""
        if connection.state == Connection.State.CLOSED and connection.close_code is not None:
            return f"{connection.state} ({connection.close_code})"
        return str(connection.state)

    @admin.display(description="rooms")
    def rooms(self, connection: Connection) -> str:
        """The rooms of an open socket, asked of the process that holds it."""
        if connection.state != Connection.State.OPEN:
            return "-"
        if not connection.process.channel_name:
            return "unknown: its process cannot be reached over the channel layer"
        try:
            return ", ".join(sorted(WebSocket(connection.pk).rooms())) or "none"
        except TransportError as exc:
            return f"unknown: {exc}"

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May send to and disconnect sockets: holds ``wsgroups.change_connection``."""
        return request.user.has_perm("wsgroups.change_connection")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "socket_summary": self._summary()})

    def _summary(self) -> dict[str, Any]:
        """Open sockets per group, per process and per room, each with a link to the filtered list."""
        status = with_rooms(collect_status())
        url = reverse("admin:wsgroups_connection_changelist")
        open_state = {"state__exact": Connection.State.OPEN}
        return {
            "total": status.sockets,
            "groups": [
                {"name": group, "count": count, "url": f"{url}?{urlencode({'group': group, **open_state})}"}
                for group, count in status.groups.items()
            ],
            "processes": [
                {
                    "name": f"{process.kind} {process.hostname}:{process.pid} (#{process.id})",
                    "live": process.live,
                    "count": process.sockets,
                    "url": f"{url}?{urlencode({'process__id__exact': process.id, **open_state})}",
                }
                for process in status.processes
            ],
            "rooms": [
                {"name": room, "count": count, "url": f"{url}?{urlencode({'room': room})}"}
                for room, count in largest_rooms(status.rooms or {})
            ],
            "rooms_total": len(status.rooms or {}),
            "rooms_error": status.rooms_error,
        }

    @admin.action(description="Send a message…", permissions=["operate"])
    def send_message(self, request: HttpRequest, queryset: QuerySet[Connection]) -> HttpResponse | None:
        form = SendMessageForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._action_page(request, queryset, form, "send_message", "Send a message", "Send")
        payload = form.payload()
        self._act(request, queryset, lambda ws: ws.send(payload), "Message sent to", "sent")
        return None

    @admin.action(description="Disconnect…", permissions=["operate"])
    def disconnect_sockets(self, request: HttpRequest, queryset: QuerySet[Connection]) -> HttpResponse | None:
        form = DisconnectForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._action_page(request, queryset, form, "disconnect_sockets", "Disconnect", "Disconnect")
        code, reason = form.cleaned_data["code"], form.cleaned_data["reason"]
        self._act(request, queryset, lambda ws: ws.disconnect(reason or None, code), "Closed", "closed")
        return None

    def _act(
        self,
        request: HttpRequest,
        queryset: QuerySet[Connection],
        act: Callable[[WebSocket], bool],
        done_phrase: str,
        done_verb: str,
    ) -> None:
        """Apply ``act`` to each selected socket and report: done, already dead (closed row or
        ``act`` returned False), or stopped by an unreachable channel layer."""
        done = dead = 0
        try:
            for socket_id, state in queryset.order_by("pk").values_list("pk", "state"):
                if state == Connection.State.CLOSED or not act(WebSocket(socket_id)):
                    dead += 1
                else:
                    done += 1
        except TransportError as exc:
            self.message_user(
                request,
                f"Stopped: {exc}. {_were(done)} {done_verb} before that; the rest were not tried.",
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            f"{done_phrase} {_sockets(done)}; {_were(dead)} already dead.",
            messages.SUCCESS if done else messages.WARNING,
        )

    def _action_page(
        self,
        request: HttpRequest,
        queryset: QuerySet[Connection],
        form: forms.Form,
        action: str,
        title: str,
        submit_label: str,
    ) -> TemplateResponse:
        """The intermediate page of ``action``: the selected sockets and ``form`` (unbound, or with
        its errors); it posts back to the changelist with the same selection."""
        ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        return TemplateResponse(
            request,
            ACTION_TEMPLATE,
            {
                **self.admin_site.each_context(request),
                "title": title,
                "subtitle": None,
                "opts": self.opts,
                "form": form,
                "action": action,
                "submit_label": submit_label,
                "selected_ids": ids,
                "listed": queryset.order_by("pk")[:LISTED_ON_ACTION_PAGE],
                "unlisted": max(0, len(ids) - LISTED_ON_ACTION_PAGE),
                "closed": queryset.filter(state=Connection.State.CLOSED).count(),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media + form.media,
            },
        )


@admin.register(Process)
class ProcessAdmin(ReadOnlyAdminMixin, ProcessModelAdmin):
    """Processes that joined the cluster, read-only; ``live`` applies the cluster's liveness rule."""

    list_display = ("id", "kind", "host", "live", "heartbeat_age", "started_at")
    list_filter = ("kind",)
    fieldsets = (
        (None, {"fields": ("kind", "hostname", "pid", "channel_name")}),
        ("Liveness", {"fields": ("live", "started_at", "heartbeat_at", "heartbeat_age", "stopped_at")}),
        ("Traffic and limits", {"fields": ("messages_in_per_s", "messages_out_per_s", "limits")}),
    )
    readonly_fields = ("live", "heartbeat_age", "limits")
    search_fields = ("hostname", "pid__exact")

    @admin.display(description="host:pid", ordering="hostname")
    def host(self, process: Process) -> str:
        return f"{process.hostname}:{process.pid}"

    @admin.display(description="heartbeat age", ordering="-heartbeat_at")
    def heartbeat_age(self, process: Process) -> str:
        if process.heartbeat_at is None:
            return "never"
        age: timedelta = timezone.now() - process.heartbeat_at
        return f"{age.total_seconds():.1f} s"

    @admin.display(description="live", boolean=True)
    def live(self, process: Process) -> bool:
        return is_live(process, timezone.now())

    @admin.display(description="refused or closed by limits")
    def limits(self, process: Process) -> str:
        return format_limit_events(process.limit_events or {}).removeprefix("limits: ") or "-"


@admin.register(BroadcastSubscription)
class BroadcastSubscriptionAdmin(BroadcastSubscriptionModelAdmin):
    """Sockets subscribed to ``manage.py wsbroadcast``, with how many messages each got."""

    list_display = ("websocket_id", "num_broadcasted", "created_at")
    search_fields = ("websocket_id__exact",)
    readonly_fields = ("num_broadcasted", "created_at")
