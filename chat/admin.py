"""The moderators' admin (docs/moderation.md).

Every action that changes something calls chat.services, the same code as the staff
API, so it is logged and takes effect live on every worker. Fields whose change must be
heard live (a room's lock, a message's removal, a ban's end) are read-only in the forms:
a plain save would change the row and tell nobody.

A moderator is a staff user in the Moderators group, not a superuser: each action names
the permission it needs, and the group has exactly those (chat.services.moderation.MODERATOR_PERMISSIONS).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.admin import ApiTokenAdmin
from accounts.models import ApiToken
from chat import presence, protocol
from chat.models import Ban, Message, MessageEdit, ModerationAction, Mute, Reaction, Report, Room, sanction_active_q
from chat.services import moderation
from chat.services.messages import room_notice


def _actor(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User), "the admin lets only signed-in staff in"
    return user


def _excerpt(text: str, length: int = 80) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# ---- intermediate pages for actions that need input -----------------------------------
class SanctionForm(forms.Form):
    room = forms.ModelChoiceField(queryset=Room.objects.all(), required=False, empty_label="Site-wide (every room)")
    minutes = forms.IntegerField(
        required=False, min_value=1, max_value=moderation.MAX_SANCTION_MINUTES, help_text="Empty: until lifted."
    )
    reason = forms.CharField(required=False, max_length=moderation.MAX_REASON_CHARS, widget=forms.Textarea(attrs={"rows": 3}))


class NoticeForm(forms.Form):
    content = forms.CharField(max_length=protocol.MAX_CONTENT_CHARS, widget=forms.Textarea(attrs={"rows": 4}))


def _ask(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    form_class: type[forms.Form],
    *,
    action: str,
    title: str,
    intro: str,
    submit: str,
) -> forms.Form | TemplateResponse:
    """The valid form once the intermediate page was submitted; until then the page itself.

    The changelist posts the action without ``apply``; the page posts it back with the
    same selection and ``apply``, and Django runs the action again with both.
    """
    form = form_class(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        return form
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "submit": submit,
        "opts": model_admin.model._meta,
        "queryset": queryset,
        "form": form,
        "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, "admin/chat/action_form.html", context)


# ---- rooms -------------------------------------------------------------------------------
@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    """Only the title of a room that is not a direct message can be edited. Who may read
    a room (privacy, members), its owner and its slug belong to chat.services: unticking
    *private* here used to open a DM to everyone, unlogged. Members are not shown or
    edited here (the API's member_add and member_remove close removed members' sockets)."""

    list_display = ["slug", "title", "private", "online", "message_count", "locked", "created_at"]
    search_fields = ["slug", "title"]
    list_filter = ["private", "locked"]
    # The assistant is set by the owner or staff through PATCH /api/rooms/<slug> (or the room
    # page), which checks the model against GET /v1/models: shown here, not edited.
    fields = [
        "slug",
        "title",
        "private",
        "direct",
        "created_by",
        "created_at",
        "locked",
        "assistant",
        "assistant_model",
        "last_message_id",
    ]
    readonly_fields = [
        "slug",
        "private",
        "direct",
        "created_by",
        "created_at",
        "locked",
        "assistant",
        "assistant_model",
        "last_message_id",
    ]
    actions = ["lock_rooms", "unlock_rooms", "send_notice", "make_public"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A DM's title names its two people (dm_open).
        return self.fields if obj is not None and obj.direct_key is not None else self.readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Rooms are made over the API (room_create): a private one gets its owner
        # as first member there, and every field but the title is read-only here.
        return False

    def has_publish_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.publish_room")

    @admin.display(description="direct message", boolean=True)
    def direct(self, room: Room) -> bool:
        return room.direct_key is not None

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """Counts for the page's rooms only, one query each, rather than one per row
        (or an aggregate over every message of every room)."""
        changelist = super().get_changelist_instance(request)
        rooms: list[Any] = list(changelist.result_list)
        ids = [room.pk for room in rooms]
        online = presence.room_online_counts(ids)
        counts = dict(
            Message.objects.filter(room_id__in=ids, removed_at__isnull=True)
            .values("room_id")
            .annotate(count=Count("id"))
            .values_list("room_id", "count")
        )
        for room in rooms:
            room.online_now, room.visible_messages = online[room.pk], counts.get(room.pk, 0)
        return changelist

    @admin.display(description="online now")
    def online(self, room: Any) -> int | None:
        return getattr(room, "online_now", None)

    @admin.display(description="messages")
    def message_count(self, room: Any) -> int | None:
        return getattr(room, "visible_messages", None)

    @admin.action(description="Lock selected rooms", permissions=["change"])
    def lock_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._lock(request, queryset, locked=True)

    @admin.action(description="Unlock selected rooms", permissions=["change"])
    def unlock_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._lock(request, queryset, locked=False)

    def _lock(self, request: HttpRequest, queryset: QuerySet[Room], *, locked: bool) -> None:
        for room in queryset:
            moderation.room_lock(room=room, locked=locked, locked_by=_actor(request))
        self.message_user(request, f"{'Locked' if locked else 'Unlocked'} {_count(len(queryset), 'room')}.", messages.SUCCESS)

    @admin.action(description="Make selected rooms public", permissions=["publish"])
    def make_public(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        changed = refused = 0
        for room in queryset:
            try:
                changed += moderation.room_make_public(room=room, changed_by=_actor(request))
            except ValidationError:
                refused += 1  # a direct message
        self.message_user(request, f"Made {_count(changed, 'room')} public.", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Left {_count(refused, 'direct message')} private: a direct message is always private.", messages.ERROR
            )

    @admin.action(description="Send a notice to selected rooms…", permissions=["change"])
    def send_notice(self, request: HttpRequest, queryset: QuerySet[Room]) -> TemplateResponse | None:
        answer = _ask(
            self,
            request,
            queryset,
            NoticeForm,
            action="send_notice",
            title="Send a notice",
            intro="Everyone connected to these rooms now gets this notice:",
            submit="Send",
        )
        if isinstance(answer, TemplateResponse):
            return answer
        for room in queryset:
            room_notice(room=room, content=answer.cleaned_data["content"], sent_by=_actor(request))
        self.message_user(request, f"Sent the notice to {_count(len(queryset), 'room')}.", messages.SUCCESS)
        return None


# ---- messages ----------------------------------------------------------------------------
class RemovedFilter(admin.SimpleListFilter):
    title = "removed"
    parameter_name = "removed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Visible"), ("yes", "Removed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(removed_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(removed_at__isnull=True)
        return queryset


class _ReadOnlyInline(admin.TabularInline):
    """History shown beside a message, never edited here: edits and reactions are room
    changes (docs/protocol.md, "Room changes"), made only through the services."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may see the message sees its history: no permission of their own, so the
        # Moderators group keeps exactly its listed permissions.
        return self.admin_site.get_model_admin(Message).has_view_permission(request, obj)


class MessageEditInline(_ReadOnlyInline):
    model = MessageEdit
    verbose_name = "earlier version"
    verbose_name_plural = "edit history (oldest first: the content before each edit)"
    fields = ("edited_at", "edited_by", "content_before")
    readonly_fields = fields


class ReactionInline(_ReadOnlyInline):
    model = Reaction
    fields = ("emoji", "user", "created_at")
    readonly_fields = fields


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "room", "user", "excerpt", "created_at", "edited_at", "removed_at", "removed_by"]
    list_filter = ["room", "created_at", RemovedFilter]
    search_fields = ["content", "user__username", "room__slug"]
    list_select_related = ["room", "user", "removed_by"]
    fields = ("room", "user", "content", "reply_to", "nonce", "created_at", "edited_at", "removed_at", "removed_by")
    readonly_fields = fields
    inlines = [MessageEditInline, ReactionInline]
    # The exact total would count the whole table on every page view.
    show_full_result_count = False
    actions = ["remove_messages", "restore_messages"]

    @admin.display(description="content")
    def excerpt(self, message: Message) -> str:
        return _excerpt(message.content)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages come from the rooms

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # A hard delete would tell no connected client; "Remove" redacts and tells them.
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Remove selected messages (redact)", permissions=["change"])
    def remove_messages(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        removed = sum(moderation.message_remove(message=m, removed_by=_actor(request)) for m in queryset)
        self.message_user(request, f"Removed {_count(removed, 'message')}.", messages.SUCCESS)

    @admin.action(description="Restore selected messages", permissions=["change"])
    def restore_messages(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        restored = sum(moderation.message_restore(message=m, restored_by=_actor(request)) for m in queryset)
        self.message_user(request, f"Restored {_count(restored, 'message')}.", messages.SUCCESS)


# ---- users -------------------------------------------------------------------------------
admin.site.unregister(User)


@admin.register(User)
class ModeratedUserAdmin(UserAdmin):
    """Django's UserAdmin, plus banning and muting."""

    actions = ["ban_users", "mute_users"]

    def has_ban_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.add_ban")

    def has_mute_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.add_mute")

    @admin.action(description="Ban selected users…", permissions=["ban"])
    def ban_users(self, request: HttpRequest, queryset: QuerySet[User]) -> TemplateResponse | None:
        answer = _ask(
            self,
            request,
            queryset,
            SanctionForm,
            action="ban_users",
            title="Ban users",
            intro="Their connections close at once, on every worker, and they cannot reconnect until the ban ends:",
            submit="Ban",
        )
        if isinstance(answer, TemplateResponse):
            return answer
        for user in queryset:
            moderation.ban_create(user=user, created_by=_actor(request), **answer.cleaned_data)
        self.message_user(request, f"Banned {_count(len(queryset), 'user')}.", messages.SUCCESS)
        return None

    @admin.action(description="Mute selected users…", permissions=["mute"])
    def mute_users(self, request: HttpRequest, queryset: QuerySet[User]) -> TemplateResponse | None:
        answer = _ask(
            self,
            request,
            queryset,
            SanctionForm,
            action="mute_users",
            title="Mute users",
            intro="Their next messages are refused with the muted error until the mute ends:",
            submit="Mute",
        )
        if isinstance(answer, TemplateResponse):
            return answer
        for user in queryset:
            moderation.mute_create(user=user, created_by=_actor(request), **answer.cleaned_data)
        self.message_user(request, f"Muted {_count(len(queryset), 'user')}.", messages.SUCCESS)
        return None


# ---- bans and mutes ------------------------------------------------------------------------
class SanctionStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("ended", "Ended or lifted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(sanction_active_q(timezone.now()))
        if self.value() == "ended":
            return queryset.exclude(sanction_active_q(timezone.now()))
        return queryset


class SanctionAddForm(forms.ModelForm):
    minutes = forms.IntegerField(
        required=False, min_value=1, max_value=moderation.MAX_SANCTION_MINUTES, help_text="Empty: until lifted."
    )


class SanctionAdmin(admin.ModelAdmin):
    """Adding goes through the service (so it is logged and heard live); once made, a
    sanction is only lifted, never edited or deleted, so the history stays true."""

    form = SanctionAddForm
    list_display = ["id", "user", "scope", "reason", "created_by", "created_at", "ends_at", "lifted_at", "in_force"]
    list_filter = [SanctionStateFilter, "created_at"]
    search_fields = ["user__username", "room__slug", "reason"]
    list_select_related = ["user", "room", "created_by"]
    raw_id_fields = ["user", "room"]
    actions = ["lift"]
    noun = "sanction"

    def create(self, **kwargs: Any) -> Ban | Mute:
        raise NotImplementedError

    def lift_one(self, sanction: Any, lifted_by: User) -> bool:
        raise NotImplementedError

    @admin.display(description="room")
    def scope(self, sanction: Ban | Mute) -> str:
        return sanction.room.slug if sanction.room else "site-wide"

    @admin.display(description="in force", boolean=True)
    def in_force(self, sanction: Ban | Mute) -> bool:
        return sanction.lifted_at is None and (sanction.ends_at is None or sanction.ends_at > timezone.now())

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["user", "room", "minutes", "reason"]
        return ["user", "room", "reason", "created_by", "created_at", "ends_at", "lifted_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else self.get_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            return  # every field is read-only once the sanction exists
        data = form.cleaned_data
        created = self.create(
            user=data["user"], room=data["room"], minutes=data["minutes"], reason=data["reason"], created_by=_actor(request)
        )
        obj.pk = created.pk
        obj.refresh_from_db()

    @admin.action(description="Lift selected", permissions=["change"])
    def lift(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        lifted = sum(self.lift_one(sanction, _actor(request)) for sanction in queryset)
        self.message_user(request, f"Lifted {_count(lifted, self.noun)}.", messages.SUCCESS)


@admin.register(Ban)
class BanAdmin(SanctionAdmin):
    noun = "ban"

    def create(self, **kwargs: Any) -> Ban:
        return moderation.ban_create(**kwargs)

    def lift_one(self, sanction: Ban, lifted_by: User) -> bool:
        return moderation.ban_lift(ban=sanction, lifted_by=lifted_by)


@admin.register(Mute)
class MuteAdmin(SanctionAdmin):
    noun = "mute"

    def create(self, **kwargs: Any) -> Mute:
        return moderation.mute_create(**kwargs)

    def lift_one(self, sanction: Mute, lifted_by: User) -> bool:
        return moderation.mute_lift(mute=sanction, lifted_by=lifted_by)


# ---- reports -----------------------------------------------------------------------------
class ReportStatusFilter(admin.SimpleListFilter):
    """Open reports unless asked otherwise: the changelist is the moderators' queue."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved"), ("all", "All")]

    def choices(self, changelist: Any) -> Any:
        current = self.value() or "open"
        for value, title in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        current = self.value() or "open"
        if current == "open":
            return queryset.filter(resolved_at__isnull=True)
        if current == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["id", "message_excerpt", "room", "author", "reporter", "reason", "created_at", "resolution", "resolved_by"]
    list_filter = [ReportStatusFilter, "resolution", "created_at"]
    search_fields = ["reason", "message__content", "reporter__username", "message__user__username"]
    list_select_related = ["message__room", "message__user", "reporter", "resolved_by"]
    fields = ("message", "reporter", "reason", "created_at", "resolved_at", "resolved_by", "resolution")
    readonly_fields = ("message", "reporter", "reason", "created_at", "resolved_at", "resolved_by", "resolution")
    actions = ["remove_messages", "dismiss_reports"]

    @admin.display(description="message")
    def message_excerpt(self, report: Report) -> str:
        removed = " (removed)" if report.message.removed_at else ""
        return _excerpt(report.message.content) + removed

    @admin.display(description="room")
    def room(self, report: Report) -> str:
        return report.message.room.slug

    @admin.display(description="author")
    def author(self, report: Report) -> str:
        return report.message.user.get_username()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users report messages through the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Remove the reported messages", permissions=["change"])
    def remove_messages(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        for report in queryset.select_related("message"):
            moderation.report_resolve(report=report, resolution=Report.Resolution.REMOVED, resolved_by=_actor(request))
        self.message_user(request, f"Removed the messages of {_count(len(queryset), 'report')}.", messages.SUCCESS)

    @admin.action(description="Dismiss selected reports (keep the messages)", permissions=["change"])
    def dismiss_reports(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        dismissed = sum(
            moderation.report_resolve(report=report, resolution=Report.Resolution.DISMISSED, resolved_by=_actor(request))
            for report in queryset.select_related("message")
        )
        self.message_user(request, f"Dismissed {_count(dismissed, 'report')}.", messages.SUCCESS)


# ---- API tokens ----------------------------------------------------------------------------
admin.site.unregister(ApiToken)


@admin.register(ApiToken)
class ModeratedApiTokenAdmin(ApiTokenAdmin):
    """accounts' token admin (read-only, revoked by the action only), with revocation
    written to the moderation log."""

    def revoke_one(self, request: HttpRequest, token: ApiToken) -> bool:
        return moderation.apitoken_revoke(token=token, revoked_by=_actor(request))


# ---- the audit log -------------------------------------------------------------------------
@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the log is written by chat.services only."""

    list_display = ["created_at", "actor", "action", "target_user", "room", "message_id", "reason"]
    list_filter = ["action", "created_at"]
    search_fields = ["actor__username", "target_user__username", "room__slug", "reason"]
    list_select_related = ["actor", "target_user", "room"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
