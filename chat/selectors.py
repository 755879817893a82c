"""Reads. Keyword-only, typed, no side effects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from chat import message_store, presence, protocol
from chat.models import Ban, Message, Mute, Reaction, ReadMarker, Report, Room, RoomChange, RoomMember


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
        "assistant": room.assistant,
        "assistant_model": room.assistant_model or None,
    }
    if unread is not None:
        room_object["unread"] = unread
    return room_object


def room_objects(*, rooms: list[Room], user: User | None = None) -> list[dict[str, object]]:
    counts = presence.room_online_counts([room.pk for room in rooms])
    unread = room_unread_counts(user_id=user.pk, room_ids=[r.pk for r in rooms]) if user else {}
    return [room_object(room=room, online=counts[room.pk], unread=unread.get(room.pk)) for room in rooms]


def room_unread_counts(*, user_id: int, room_ids: list[int]) -> dict[int, int]:
    """Per room: the visible messages by others after the user's read marker (with no
    marker, every visible message by others). One query for the markers, one for the counts."""
    if not room_ids:
        return {}
    markers = dict(ReadMarker.objects.filter(user_id=user_id, room_id__in=room_ids).values_list("room_id", "message_id"))
    unread = Q(room_id__in=[room_id for room_id in room_ids if room_id not in markers])
    for room_id, last_id in markers.items():
        unread |= Q(room_id=room_id, pk__gt=last_id)
    counted = dict(
        Message.objects.filter(unread, removed_at__isnull=True)
        .exclude(user_id=user_id)
        .values("room_id")
        .annotate(n=Count("pk"))
        .values_list("room_id", "n")
    )
    return {room_id: counted.get(room_id, 0) for room_id in room_ids}


def read_marker_get(*, user_id: int, room_id: int) -> int:
    """The newest message id the user has read in the room (0: none)."""
    return ReadMarker.objects.filter(user_id=user_id, room_id=room_id).values_list("message_id", flat=True).first() or 0


def room_members(*, room: Room) -> list[dict[str, str]]:
    return [
        {"username": username, "role": role}
        for username, role in RoomMember.objects.filter(room=room)
        .order_by("joined_at", "pk")
        .values_list("user__username", "role")
    ]


def room_seqs(*, room_ids: list[int]) -> dict[int, int]:
    """Each room's change counter: the seq of its newest change (docs/protocol.md, "Room changes")."""
    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "seq"))


def _visible(room_id: int) -> QuerySet[Message]:
    return Message.objects.filter(room_id=room_id, removed_at__isnull=True).select_related("user")


def message_get_visible(*, room: Room, message_id: int) -> Message | None:
    """A message of this room that has not been removed."""
    return _visible(room.pk).filter(pk=message_id).first()


def message_get(*, room_id: int, message_id: int) -> Message | None:
    """A message of this room, removed or not (None for another room's or an unknown id)."""
    return Message.objects.filter(pk=message_id, room_id=room_id).select_related("user").first()


def reactions_of(*, message_ids: list[int]) -> dict[int, protocol.Reactions]:
    """Each message's reactions: emoji (in CHAT_REACTIONS' order) -> usernames in the order
    they reacted. Messages without any are absent."""
    if not message_ids:
        return {}
    rows = Reaction.objects.filter(message_id__in=message_ids).order_by("pk").values_list("message_id", "emoji", "user__username")
    return reaction_sets(rows=rows)


def reaction_sets(*, rows: Iterable[tuple[int, str, str]]) -> dict[int, protocol.Reactions]:
    """(message id, emoji, username) rows in the order the reactions were made -> each
    message's set, as ``reactions`` frames carry it: emoji in CHAT_REACTIONS' order,
    usernames in the order they reacted. The one place a set's order is decided."""
    order = {emoji: position for position, emoji in enumerate(settings.CHAT_REACTIONS)}
    found: dict[int, dict[str, list[str]]] = defaultdict(dict)
    for message_id, emoji, username in rows:
        found[message_id].setdefault(emoji, []).append(username)
    return {
        message_id: dict(sorted(per_emoji.items(), key=lambda item: order.get(item[0], len(order))))
        for message_id, per_emoji in found.items()
    }


def message_frames(*, messages: list[Message], room_slug: str) -> list[protocol.MessageFrame]:
    """The messages' frames as they are now: content, edit time, reply, reactions, and the
    seq of each one's creation. Two queries besides the messages' own."""
    ids = [m.pk for m in messages]
    created = dict(RoomChange.objects.filter(message_id__in=ids, kind=RoomChange.Kind.CREATED).values_list("message_id", "seq"))
    reactions = reactions_of(message_ids=ids)
    return [
        protocol.message_frame(
            id=m.pk,
            room=room_slug,
            user=m.user.username,
            content=m.content,
            created_at=m.created_at,
            nonce=m.nonce,
            seq=created.get(m.pk, 0),
            reply_to=m.reply_to_id,
            edited_at=m.edited_at,
            reactions=reactions.get(m.pk),
            streaming=m.streaming if m.stream_id else None,
            finish_reason=m.finish_reason,
        )
        for m in messages
    ]


def message_list_after(*, room: Room, after: int, limit: int) -> list[protocol.MessageFrame]:
    messages = list(_visible(room.pk).filter(pk__gt=after).order_by("pk")[:limit])
    return message_frames(messages=messages, room_slug=room.slug)


def message_list_before(*, room: Room, before: int, limit: int, after: int = 0) -> list[protocol.MessageFrame]:
    """The newest ``limit`` visible messages with after < id < before, ascending: older history, a page at a time."""
    messages = list(_visible(room.pk).filter(pk__lt=before, pk__gt=after).order_by("-pk")[:limit])
    return message_frames(messages=messages[::-1], room_slug=room.slug)


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


# ---- the change log (docs/protocol.md, "Room changes") -----------------------------------------
@dataclass(frozen=True, slots=True)
class ReplayedChange:
    seq: int  # the frame's seq: no change of its kind to its message after it, up to the replay's end
    new_id: int  # a ``message`` frame's id (a message created in the replayed range), else 0
    frame: protocol.ChangeFrame


@dataclass(frozen=True, slots=True)
class Replay:
    missed: int  # more than the limit: the changes after ``after``, and ``changes`` is empty
    changes: list[ReplayedChange]
    seq: int  # the highest seq covered: what ``synced`` says


_STATE_KINDS = (RoomChange.Kind.REMOVED, RoomChange.Kind.RESTORED)


def change_replay(*, room_id: int, room_slug: str, after: int, upto: int | None = None, limit: int | None = None) -> Replay:
    """The room's changes after seq ``after`` (up to ``upto``), as frames of the messages'
    current state, ascending by seq: the ``last_seq`` resume and every hub's backfill.

    Per message, each kind of change is collapsed into one frame of its current state,
    carrying the seq of the newest change of that kind: a message created in the range
    gets its ``message`` frame (with the seq of its creation); one removed now, only
    ``message_deleted`` (if it was removed or restored in the range) and nothing of its
    content; one restored, ``message_restored``; edits, ``message_edited``; reactions,
    ``reactions``. Frames are in seq order, so a client that drops in the middle resumes
    from the last seq it got and misses nothing. Past ``limit`` changes, nothing but the
    count (a ``gap``).
    """
    current = Room.objects.filter(pk=room_id).values_list("seq", flat=True).first() or 0
    query = RoomChange.objects.filter(room_id=room_id, seq__gt=after).order_by("seq")
    if upto is not None:
        query = query.filter(seq__lte=upto)
    rows = list(query.values_list("seq", "message_id", "kind")[: None if limit is None else limit + 1])
    if limit is not None and len(rows) > limit:
        return Replay(missed=query.count(), changes=[], seq=max(current, rows[-1][0]))
    covered = rows[-1][0] if rows else min(after, current) if upto is None else min(after, upto)
    newest: dict[int, dict[str, int]] = defaultdict(dict)  # message id -> kind -> newest seq
    for seq, message_id, kind in rows:
        newest[message_id]["state" if kind in _STATE_KINDS else kind] = seq
    messages = {m.pk: m for m in Message.objects.filter(pk__in=list(newest)).select_related("user")}
    shown = [m for m in messages.values() if m.removed_at is None]
    frames = {f["id"]: f for f in message_frames(messages=shown, room_slug=room_slug)}
    changes: list[ReplayedChange] = []
    for message_id, kinds in newest.items():
        message = messages.get(message_id)
        if message is None:
            continue
        if message.removed_at is not None:
            if "state" in kinds:
                changes.append(
                    ReplayedChange(kinds["state"], 0, {"type": "message_deleted", "id": message_id, "seq": kinds["state"]})
                )
            continue
        frame = frames[message_id]
        if RoomChange.Kind.CREATED in kinds:
            changes.append(ReplayedChange(kinds[RoomChange.Kind.CREATED], message_id, frame))
        elif "state" in kinds:
            changes.append(ReplayedChange(kinds["state"], 0, protocol.restored_frame(frame, seq=kinds["state"])))
        if RoomChange.Kind.EDITED in kinds and message.edited_at is not None:
            seq = kinds[RoomChange.Kind.EDITED]
            edited: protocol.MessageEditedFrame = {
                "type": "message_edited",
                "id": message_id,
                "content": message.content,
                "edited_at": protocol.iso(message.edited_at),
                "seq": seq,
            }
            changes.append(ReplayedChange(seq, 0, edited))
        if RoomChange.Kind.FINISHED in kinds and RoomChange.Kind.CREATED not in kinds:
            # A reply that ended in the range, created before it: the end is the change
            # (created in the range, its message frame is its final state already).
            seq = kinds[RoomChange.Kind.FINISHED]
            done: protocol.MessageDoneFrame = {
                "type": "message_done",
                "id": message_id,
                "content": message.content,
                "finish_reason": message.finish_reason,
                "seq": seq,
            }
            changes.append(ReplayedChange(seq, 0, done))
        if RoomChange.Kind.REACTIONS in kinds:
            seq = kinds[RoomChange.Kind.REACTIONS]
            changes.append(
                ReplayedChange(seq, 0, {"type": "reactions", "id": message_id, "reactions": frame["reactions"], "seq": seq})
            )
    changes.sort(key=lambda change: change.seq)
    return Replay(missed=0, changes=changes, seq=covered)


# These three run before a socket joins, a message is changed or a stream starts, so they
# are chat.message_store's SQL rather than ``applying_to(...).exists()``: 23 µs of CPU
# against 347 µs for compiling the queryset (docs/performance.md, "Tenth step"). The same
# rule as SanctionQuerySet.active: not lifted, not past its end.
def _sanctioned(sanction: type[Ban] | type[Mute], *, user_id: int, room_id: int | None) -> bool:
    """Whether a site-wide sanction, or (with ``room_id``) one of that room, applies to the user now."""
    sanctions = message_store.sanctioned_pairs(sanction=sanction, user_ids=[user_id], now=timezone.now())
    return (user_id, None) in sanctions or (room_id is not None and (user_id, room_id) in sanctions)


def user_is_banned(*, user_id: int, room_id: int) -> bool:
    return _sanctioned(Ban, user_id=user_id, room_id=room_id)


def user_is_banned_site_wide(*, user_id: int) -> bool:
    """Whether a ban with no room applies to the user now: they may read, but not act on
    others (docs/protocol.md, "Authentication and the handshake": no posting, rooms, DMs,
    members, tasks that read rooms, generations)."""
    return _sanctioned(Ban, user_id=user_id, room_id=None)


def user_is_muted(*, user_id: int, room_id: int) -> bool:
    return _sanctioned(Mute, user_id=user_id, room_id=room_id)


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


# ---- the assistant's replies (docs/protocol.md, "The assistant in a room") -------------------
def streaming_replies(*, room_id: int, room_slug: str) -> list[tuple[protocol.MessageFrame, str]]:
    """The room's reply still streaming (at most one), as its frame and its stream's id."""
    replies = list(Message.objects.filter(room_id=room_id, streaming=True, removed_at__isnull=True).select_related("user"))
    frames = message_frames(messages=replies, room_slug=room_slug)
    return [(frame, reply.stream_id) for frame, reply in zip(frames, replies, strict=True)]


def reply_stream(*, message_id: int) -> tuple[str, bool] | None:
    """A reply's stream id, and whether it is still streaming; None for no such reply."""
    found = Message.objects.filter(pk=message_id).exclude(stream_id="").values_list("stream_id", "streaming").first()
    return (found[0], found[1]) if found else None


def room_recent_messages(*, room_id: int, limit: int, upto: int) -> list[tuple[str, str]]:
    """The room's newest visible messages up to id ``upto``, oldest first, as (author,
    content): what the assistant reads before it answers."""
    visible = _visible(room_id).filter(pk__lte=upto).exclude(streaming=True)
    rows = visible.order_by("-pk").values_list("user__username", "content")[:limit]
    return list(reversed(rows))
