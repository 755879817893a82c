"""``@username`` mentions in chat messages become ``mention`` notifications.

Chat's: it reads rooms and members to decide who may see a message, and asks
notifications.services to store the rows (notifications is below chat)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.contrib.auth.models import User

from chat.models import Room, RoomMember
from notifications.services import notification_create

# Django's default username characters: letters, digits and @.+-_ (a trailing dot or
# comma belongs to the sentence, not the name).
MENTION = re.compile(r"(?<![\w@])@([\w.+-]*[\w+-])")


@dataclass(frozen=True, slots=True)
class PostedMessage:
    message_id: int
    room_slug: str
    author_id: int
    author: str
    content: str


def mentioned_usernames(content: str) -> set[str]:
    return set(MENTION.findall(content)) if "@" in content else set()


def mentions_assistant(content: str) -> bool:
    """Whether ``content`` asks the room's assistant: ``@assistant`` as a whole word, in
    any case (docs/protocol.md, "The assistant in a room"). The assistant user is
    inactive, so mentions_notify never notifies it."""
    return "@" in content and any(name.lower() == "assistant" for name in MENTION.findall(content))


def mentions_notify(*, messages: list[PostedMessage]) -> int:
    """Notify everyone mentioned (once per message, never the author); call inside the
    messages' transaction. Returns how many notifications were created."""
    wanted = {message.message_id: mentioned_usernames(message.content) for message in messages}
    names = set().union(*wanted.values()) if wanted else set()
    if not names:
        return 0
    users = dict(User.objects.filter(username__in=names, is_active=True).values_list("username", "pk"))
    # A private room's content goes only to its members: mentioning someone outside it
    # notifies nobody (the notification would carry the message).
    slugs = {message.room_slug for message in messages if wanted[message.message_id]}
    members: dict[str, set[int]] = {
        slug: set() for slug in Room.objects.filter(slug__in=slugs, private=True).values_list("slug", flat=True)
    }
    in_rooms = RoomMember.objects.filter(room__slug__in=members, user_id__in=users.values())
    for slug, member_id in in_rooms.values_list("room__slug", "user_id"):
        members[slug].add(member_id)
    created = 0
    for message in messages:
        for name in sorted(wanted[message.message_id]):
            user_id = users.get(name)
            if user_id is None or user_id == message.author_id:
                continue
            if message.room_slug in members and user_id not in members[message.room_slug]:
                continue
            data = {
                "room": message.room_slug,
                "from": message.author,
                "message_id": message.message_id,
                "content": message.content,
            }
            notification_create(user_id=user_id, kind="mention", data=data)
            created += 1
    return created
