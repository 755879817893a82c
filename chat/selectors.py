"""Reads. Keyword-only, typed, no side effects."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from chat import presence, protocol
from chat.models import Ban, Message, Mute, Report, Room, RoomMember


def room_get(*, slug: str) -> Room | None:
    return Room.objects.filter(slug=slug).first()


def user_get(*, username: str) -> User | None:
    return User.objects.filter(username=username).first()


def room_member(*, room_id: int, user_id: int) -> RoomMember | None:
    return RoomMember.objects.filter(room_id=room_id, user_id=user_id).first()


def room_visible(*, room: Room, user: User, staff_sees_private: bool) -> bool:
    """A private room exists only for its members (and, over REST and in the admin, staff)."""
    if not room.private or (staff_sees_private and user.is_staff):
        return True
    return RoomMember.objects.filter(room=room, user=user).exists()


def room_get_for(*, slug: str, user: User, staff_sees_private: bool = True) -> Room | None:
    """The room as this user may see it: None for a private room they are not in."""
    room = room_get(slug=slug)
    if room is None or not room_visible(room=room, user=user, staff_sees_private=staff_sees_private):
        return None
    return room


def room_list_for(*, user: User) -> list[Room]:
    """Public rooms, and the private rooms (direct messages included) the user is in."""
    return list(Room.objects.filter(Q(private=False) | Q(memberships__user=user)).distinct())


def room_object(*, room: Room, online: int | None = None, unread: int | None = None) -> dict[str, object]:
    """The room object of docs/protocol.md, "REST" and "Other endpoints" (``direct`` and ``unread`` are additions)."""
    if online is None:
        online = presence.room_online_counts([room.pk])[room.pk]
    room_object: dict[str, object] = {
        "slug": room.slug,
        "title": room.title,
        "online": online,
        "locked": room.locked,
        "private": room.private,
        "direct": room.direct_key is not None,
    }
    if unread is not None:
        room_object["unread"] = unread
    return room_object


def room_objects(*, rooms: list[Room], user: User | None = None) -> list[dict[str, object]]:
    counts = presence.room_online_counts([room.pk for room in rooms])
    unread = room_unread_counts(user_id=user.pk, room_ids=[r.pk for r in rooms if r.private]) if user else {}
    return [room_object(room=room, online=counts[room.pk], unread=unread.get(room.pk)) for room in rooms]


def room_unread_counts(*, user_id: int, room_ids: list[int]) -> dict[int, int]:
    """Visible messages above the member's last read id, per private room they are in."""
    last_read = dict(RoomMember.objects.filter(user_id=user_id, room_id__in=room_ids).values_list("room_id", "last_read_id"))
    if not last_read:
        return {}
    unread = Q()
    for room_id, last_id in last_read.items():
        unread |= Q(room_id=room_id, pk__gt=last_id)
    counted = dict(
        Message.objects.filter(unread, removed_at__isnull=True)
        .values("room_id")
        .annotate(n=Count("pk"))
        .values_list("room_id", "n")
    )
    return {room_id: counted.get(room_id, 0) for room_id in last_read}


def room_members(*, room: Room) -> list[dict[str, str]]:
    return [
        {"username": username, "role": role}
        for username, role in RoomMember.objects.filter(room=room)
        .order_by("joined_at", "pk")
        .values_list("user__username", "role")
    ]


def room_last_message_ids(*, room_ids: list[int]) -> dict[int, int]:
    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "last_message_id"))


def _visible(room_id: int) -> QuerySet[Message]:
    return Message.objects.filter(room_id=room_id, removed_at__isnull=True).select_related("user")


def message_get_visible(*, room: Room, message_id: int) -> Message | None:
    """A message of this room that has not been removed."""
    return _visible(room.pk).filter(pk=message_id).first()


def message_frames(*, messages: list[Message], room_slug: str) -> list[protocol.MessageFrame]:
    return [
        protocol.message_frame(
            id=m.pk, room=room_slug, user=m.user.username, content=m.content, created_at=m.created_at, nonce=m.nonce
        )
        for m in messages
    ]


def message_list_after(*, room: Room, after: int, limit: int) -> list[protocol.MessageFrame]:
    messages = list(_visible(room.pk).filter(pk__gt=after).order_by("pk")[:limit])
    return message_frames(messages=messages, room_slug=room.slug)


def message_range(*, room_id: int, room_slug: str, after: int, upto: int | None) -> list[protocol.MessageFrame]:
    """Visible messages with after < id <= upto (no upper bound when upto is None), ascending."""
    query = _visible(room_id).filter(pk__gt=after)
    if upto is not None:
        query = query.filter(pk__lte=upto)
    return message_frames(messages=list(query.order_by("pk")), room_slug=room_slug)


def message_backlog(*, room_id: int, room_slug: str, last_id: int | None) -> tuple[int, list[protocol.MessageFrame]]:
    """(missed, frames) for a joining client, as docs/protocol.md, "The room protocol" orders.

    With ``last_id``: every visible message after it, at most BACKLOG_MAX; ``missed``
    counts the older ones left out. Without: the newest BACKLOG_DEFAULT.
    """
    query = _visible(room_id)
    if last_id is None:
        newest = list(query.order_by("-pk")[: protocol.BACKLOG_DEFAULT])
        return 0, message_frames(messages=newest[::-1], room_slug=room_slug)
    newest = list(query.filter(pk__gt=last_id).order_by("-pk")[: protocol.BACKLOG_MAX + 1])
    missed = 0
    if len(newest) > protocol.BACKLOG_MAX:
        missed = query.filter(pk__gt=last_id).count() - protocol.BACKLOG_MAX
        newest = newest[: protocol.BACKLOG_MAX]
    return missed, message_frames(messages=newest[::-1], room_slug=room_slug)


def user_is_banned(*, user_id: int, room_id: int) -> bool:
    return Ban.objects.applying_to(user_id=user_id, room_id=room_id).exists()


def user_is_banned_site_wide(*, user_id: int) -> bool:
    """Whether a ban with no room applies to the user now: they may read, but not act on
    others (docs/protocol.md, "Authentication and the handshake": no posting, rooms, DMs,
    members, tasks that read rooms, generations)."""
    return Ban.objects.applying_to(user_id=user_id, room_id=None).exists()


def user_is_muted(*, user_id: int, room_id: int) -> bool:
    return Mute.objects.applying_to(user_id=user_id, room_id=room_id).exists()


def ban_get(*, ban_id: int) -> Ban | None:
    return Ban.objects.select_related("user", "room", "created_by").filter(pk=ban_id).first()


def mute_get(*, mute_id: int) -> Mute | None:
    return Mute.objects.select_related("user", "room", "created_by").filter(pk=mute_id).first()


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def sanction_object(*, sanction: Ban | Mute) -> dict[str, object]:
    """A ban or mute as the staff API shows it (docs/protocol.md, "Moderation")."""
    now = timezone.now()
    return {
        "id": sanction.pk,
        "user": sanction.user.get_username(),
        "room": sanction.room.slug if sanction.room else None,
        "reason": sanction.reason,
        "created_by": sanction.created_by.get_username() if sanction.created_by else None,
        "created_at": _iso(sanction.created_at),
        "ends_at": _iso(sanction.ends_at),
        "lifted_at": _iso(sanction.lifted_at),
        "active": sanction.lifted_at is None and (sanction.ends_at is None or sanction.ends_at > now),
    }


def report_object(*, report: Report) -> dict[str, object]:
    return {
        "id": report.pk,
        "message": report.message_id,
        "reason": report.reason,
        "created_at": _iso(report.created_at),
    }
