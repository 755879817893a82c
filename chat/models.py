"""Rooms, messages and the sanctions that keep them civil.

No behaviour lives in save(): writes go through chat.services.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

slug_validator = RegexValidator(r"^[a-z0-9-]{1,50}$", "1 to 50 characters: lowercase letters, digits and hyphens.")


class Room(models.Model):
    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    title = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    locked = models.BooleanField(default=False)
    # A private room exists only for its members (and staff, in the admin and over REST).
    private = models.BooleanField(default=False)
    # A direct-message room: "<smaller user id>:<larger user id>". Unique, so that two
    # first requests at the same moment still make one room.
    direct_key = models.CharField(max_length=41, unique=True, null=True, blank=True, editable=False)
    # The id of the newest message, written in the same transaction as that message.
    # Each broadcast carries the previous value, so a worker that sees a broadcast
    # whose predecessor it never got knows it missed one and backfills from here.
    last_message_id = models.BigIntegerField(default=0, editable=False)
    # The room's change counter (docs/protocol.md, "Room changes"): the seq of its newest
    # RoomChange, taken in the same transaction as that change (0: no change yet).
    seq = models.BigIntegerField(default=0, editable=False)
    # The assistant answers messages that mention @assistant here; off by default, turned
    # on by the owner or staff with a model (docs/protocol.md, "The assistant in a room").
    assistant = models.BooleanField(default=False)
    assistant_model = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["slug"]
        # Not a moderator's: making a private room public shows its members' messages to everyone.
        permissions = [("publish_room", "Can make a private room public")]

    def __str__(self) -> str:
        return self.slug


class RoomMember(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["room", "joined_at"]
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="room_member_once")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.room_id} ({self.role})"


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages")
    content = models.TextField()
    nonce = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    # Soft deletion: a removed message stays for the audit trail but is never replayed.
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Set by each edit (the content before it is kept in MessageEdit).
    edited_at = models.DateTimeField(null=True, blank=True)
    # The message this one answers; the reply stays if it is removed (it shows as removed).
    reply_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # A reply of the assistant (docs/protocol.md, "The assistant in a room"): the token
    # stream (core.eventlog) its content grows from, whether it is still growing, and how
    # it ended. Its content is written here once, at the end; meanwhile it is the stream's.
    # Defaults in the database too: the message writer inserts with its own SQL (chat.message_store).
    stream_id = models.CharField(max_length=32, blank=True, default="", db_default="")
    streaming = models.BooleanField(default=False, db_default=False)
    finish_reason = models.CharField(max_length=16, blank=True, default="", db_default="")

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id")]
        # One reply at a time per room: the constraint, not a check, so that two workers
        # starting one each at the same moment cannot both succeed.
        constraints = [
            models.UniqueConstraint(fields=["room"], condition=Q(streaming=True), name="chat_message_one_streaming_reply")
        ]

    def __str__(self) -> str:
        return f"#{self.pk} in {self.room_id}"


class RoomChange(models.Model):
    """One line of a room's change log (docs/protocol.md, "Room changes"): what happened to
    which message, numbered by the room's ``seq`` (1, 2, 3 … in commit order). Written by
    chat.services in the same transaction as the change; never changed afterwards."""

    class Kind(models.TextChoices):
        CREATED = "created"
        EDITED = "edited"
        REMOVED = "removed"
        RESTORED = "restored"
        REACTIONS = "reactions"
        FINISHED = "finished"  # an assistant's reply ended (replayed as message_done)

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="changes")
    seq = models.BigIntegerField()
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [models.UniqueConstraint(fields=["room", "seq"], name="chat_room_change_seq_once")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.message_id} at {self.room_id}:{self.seq}"


class MessageEdit(models.Model):
    """A message's content before one of its edits: its history, for moderators."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="edits")
    content_before = models.TextField()
    edited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    edited_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["message", "id"]

    def __str__(self) -> str:
        return f"edit of #{self.message_id} at {self.edited_at:%Y-%m-%d %H:%M:%S}"


class Reaction(models.Model):
    """One user's emoji on one message (each emoji at most once per user and message)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["message", "id"]
        constraints = [models.UniqueConstraint(fields=["message", "user", "emoji"], name="chat_reaction_once")]

    def __str__(self) -> str:
        return f"{self.emoji} by {self.user_id} on #{self.message_id}"


class ReadMarker(models.Model):
    """How far a user has read in a room: the newest message id they have seen. Forward only."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")
    message_id = models.BigIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "room"], name="chat_read_marker_once")]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.room_id} up to #{self.message_id}"


def sanction_active_q(now: datetime) -> Q:
    """Sanctions in force at ``now``: not lifted, and not past their end."""
    return Q(lifted_at__isnull=True) & (Q(ends_at__isnull=True) | Q(ends_at__gt=now))


class SanctionQuerySet(models.QuerySet["Sanction"]):
    def active(self) -> SanctionQuerySet:
        return self.filter(sanction_active_q(timezone.now()))

    def applying_to(self, *, user_id: int, room_id: int | None) -> SanctionQuerySet:
        """Sanctions on this user that cover this room (site-wide ones cover every room)."""
        scope = Q(room__isnull=True) if room_id is None else Q(room__isnull=True) | Q(room_id=room_id)
        return self.active().filter(scope, user_id=user_id)


class Sanction(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.CASCADE, help_text="Empty means site-wide.")
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Empty means until lifted.")
    lifted_at = models.DateTimeField(null=True, blank=True)

    objects = SanctionQuerySet.as_manager()

    class Meta:
        abstract = True


class Ban(Sanction):
    """While active, the user's handshakes close with 4003 and open connections are closed."""


class Mute(Sanction):
    """While active, the user's messages are refused with the ``muted`` error."""


class Report(models.Model):
    """A user's complaint about a message, waiting in the moderators' queue until resolved."""

    class Resolution(models.TextChoices):
        REMOVED = "removed"
        DISMISSED = "dismissed"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolution = models.CharField(max_length=10, choices=Resolution.choices, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["message", "reporter"], name="chat_report_one_per_reporter")]

    def __str__(self) -> str:
        return f"report #{self.pk} on message #{self.message_id}"


class ModerationAction(models.Model):
    """The audit log: who did what to whom, when and why. Written by chat.services only,
    in the same transaction as the action, and never changed afterwards."""

    class Kind(models.TextChoices):
        BAN = "ban", "ban"
        BAN_LIFT = "ban_lift", "ban lifted"
        MUTE = "mute", "mute"
        MUTE_LIFT = "mute_lift", "mute lifted"
        LOCK = "lock", "room locked"
        UNLOCK = "unlock", "room unlocked"
        NOTICE = "notice", "notice"
        MESSAGE_REMOVE = "message_remove", "message removed"
        MESSAGE_RESTORE = "message_restore", "message restored"
        REPORT_DISMISS = "report_dismiss", "report dismissed"
        ROOM_PUBLIC = "room_public", "room made public"
        TOKEN_REVOKE = "token_revoke", "API token revoked"

    # SET_NULL everywhere: the log outlives the people, rooms and messages it mentions.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=20, choices=Kind.choices)
    target_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=500, blank=True)
    # What else the action needs to be understood later: a ban's id and end, a notice's text.
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name = "moderation action"
        verbose_name_plural = "moderation log"

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_id} at {self.created_at:%Y-%m-%d %H:%M:%S}"
