"""Writes about rooms: creating them, private rooms' members, direct messages and read
markers. Keyword-only, typed, one transaction each; live events go out after commit.

Callable from consumers (through database_sync_to_async), REST views, admin actions
and management commands alike.
"""

from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat import events, protocol, selectors
from chat.models import Message, ReadMarker, Room, RoomMember, slug_validator
from chat.protocol import ChatError
from core.errors import DomainError


class RoomExistsError(DomainError):
    """The slug is taken: ``exists``."""

    kind = "conflict"

    def __init__(self, slug: str) -> None:
        super().__init__("exists", f"room {slug!r} exists")
        self.slug = slug


class BannedError(DomainError):
    """A user banned site-wide tried to act on others (docs/protocol.md, "Authentication and
    the handshake"): ``banned``."""

    kind = "forbidden"

    def __init__(self) -> None:
        super().__init__("banned", "you are banned site-wide: you can read, but not post, create rooms or add people")


def _refuse_if_banned_site_wide(user: User | None) -> None:
    if user is not None and selectors.user_is_banned_site_wide(user_id=user.pk):
        raise BannedError


def room_create(*, slug: str, title: str, created_by: User | None, private: bool = False) -> Room:
    """Create a room; ValidationError for a bad slug or title, RoomExistsError if taken,
    BannedError if the creator is banned site-wide.

    The creator of a private room is its owner and first member."""
    _refuse_if_banned_site_wide(created_by)
    slug_validator(slug)
    title = title.strip()
    if not title or len(title) > 200:
        raise ValidationError("title must be 1 to 200 characters")
    if private and created_by is None:
        raise ValidationError("a private room needs an owner")
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, title=title, created_by=created_by, private=private)
            if private and created_by is not None:
                RoomMember.objects.create(room=room, user=created_by, role=RoomMember.Role.OWNER)
            return room
    except IntegrityError:
        raise RoomExistsError(slug) from None


# ---- private rooms and direct messages (docs/protocol.md, "Other endpoints") -------------------------------------
class MembershipError(DomainError):
    """A membership change that is not allowed; each refusal names its code and kind
    (``invalid``, ``forbidden``, ``not_found``: the code is the kind's name)."""


def member_add(*, room: Room, user: User, added_by: User) -> RoomMember:
    """Add someone to a private room; members and staff may (not while banned site-wide).
    Adding a member again is a no-op."""
    _refuse_if_banned_site_wide(added_by)
    if not room.private or room.direct_key is not None:
        raise MembershipError("invalid", "members can be added to private rooms only (not to direct messages)", kind="invalid")
    if not (added_by.is_staff or RoomMember.objects.filter(room=room, user=added_by).exists()):
        raise MembershipError("forbidden", "only members and staff may add members", kind="forbidden")
    member, _ = RoomMember.objects.get_or_create(room=room, user=user)
    return member


def member_remove(*, room: Room, user: User, removed_by: User) -> None:
    """Remove a member (themselves, or anyone by the owner or staff); their sockets in the
    room close with 4003 on every worker, and new handshakes get 4004."""
    membership = RoomMember.objects.filter(room=room, user=user).first()
    if membership is None:
        raise MembershipError("not_found", f"{user.get_username()} is not a member", kind="not_found")
    allowed = removed_by.pk == user.pk or removed_by.is_staff
    allowed = allowed or RoomMember.objects.filter(room=room, user=removed_by, role=RoomMember.Role.OWNER).exists()
    if not allowed:
        raise MembershipError(
            "forbidden", "only the owner, staff, or the member themselves may remove a member", kind="forbidden"
        )
    with transaction.atomic():
        membership.delete()
        events.user_close_on_commit(user_id=user.pk, code=protocol.CLOSE_BANNED, room_id=room.pk)


def dm_open(*, user: User, other: User) -> tuple[Room, bool]:
    """The one private room of exactly these two users, created on first use: (room, created).

    The room's unique ``direct_key`` makes two first requests at once create one room:
    the loser of the race gets an IntegrityError and reads the winner's room. BannedError
    if ``user`` is banned site-wide (an existing DM too: opening one is reaching out)."""
    _refuse_if_banned_site_wide(user)
    if user.pk == other.pk:
        raise ValidationError("a direct message needs another user")
    low, high = sorted((user.pk, other.pk))
    key = f"{low}:{high}"
    existing = Room.objects.filter(direct_key=key).first()
    if existing is not None:
        return existing, False
    names = sorted((user.get_username(), other.get_username()))
    try:
        with transaction.atomic():
            room = Room.objects.create(
                slug=f"dm-{uuid.uuid4().hex[:20]}",
                title=f"{names[0]} and {names[1]}",
                private=True,
                direct_key=key,
                created_by=user,
            )
            RoomMember.objects.bulk_create(
                [
                    RoomMember(room=room, user_id=low, role=RoomMember.Role.MEMBER),
                    RoomMember(room=room, user_id=high, role=RoomMember.Role.MEMBER),
                ]
            )
        return room, True
    except IntegrityError:
        return Room.objects.get(direct_key=key), False


def read_marker_move(*, room: Room, user: User, message_id: int, connection_key: str | None = None) -> bool:
    """Move the user's read marker in the room forward to ``message_id``; False (and
    nothing sent) if it is there or further already. After commit the user's other
    connections to the room, on every worker, get ``{"type":"read","user","id"}``: all of
    them but ``connection_key`` (the socket that moved it; None: all, as after a REST read).

    ChatError ``not_found`` for an id that is no message of this room (a removed message
    of the room is a fine place to have read up to)."""
    if not Message.objects.filter(pk=message_id, room_id=room.pk).exists():
        raise ChatError("not_found", f"no message {message_id} in this room")
    with transaction.atomic():
        marker, created = ReadMarker.objects.get_or_create(user=user, room=room, defaults={"message_id": message_id})
        moved = created or bool(
            ReadMarker.objects.filter(pk=marker.pk, message_id__lt=message_id).update(
                message_id=message_id, updated_at=timezone.now()
            )
        )
        if moved:
            events.read_on_commit(
                user_id=user.pk,
                room_id=room.pk,
                except_key=connection_key,
                frame={"type": "read", "user": user.get_username(), "id": message_id},
            )
    return moved


def room_assistant_set(*, room: Room, user: User, enabled: bool, model: str) -> Room:
    """Turn the room's assistant on (answering with ``model``) or off
    (docs/protocol.md, "The assistant in a room"). The room's owner (its creator) or staff; ChatError
    ``forbidden`` for anyone else. Which models exist is the caller's to check (chat
    knows none: room_assistant asks streaming's catalog)."""
    if room.created_by_id != user.pk and not user.is_staff:
        raise ChatError("forbidden", "only the room's owner or staff may set its assistant")
    Room.objects.filter(pk=room.pk).update(assistant=enabled, assistant_model=model)
    room.assistant, room.assistant_model = enabled, model
    return room
