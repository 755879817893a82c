"""Reactions: a user's emoji on a message, set or taken back, one or a batch at a time.

Each change takes the room's next seq in its transaction and the room gets the message's
whole set after commit (docs/protocol.md, "Room changes"). A worker's room sockets hand
their reacts to its writer (chat.writer), which commits whatever has queued up in one
transaction: at 100 reacts a second a react through the ORM cost 14 queries and 9.1 ms
of CPU (docs/performance.md, "Room changes"), a batch here costs nine SQL statements
(chat.message_store) and one Redis round trip, whatever its size.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from chat import events, message_store, protocol, selectors
from chat.message_store import ReactionRow
from chat.models import Ban, Mute, Room, RoomChange
from chat.protocol import ChatError
from chat.ratelimit import rate_limit_hits


@dataclass(frozen=True, slots=True)
class ReactionDraft:
    """A react to be written (plain ids and names, as chat.services.messages.MessageDraft)."""

    room_id: int
    room_slug: str
    user_id: int
    username: str
    message_id: int
    emoji: str
    on: bool


def reaction_set(*, room: Room, user: User, message_id: int, emoji: str, on: bool) -> protocol.Reactions:
    """Add (``on``) or take back the user's ``emoji`` on a message; the room gets the
    message's whole reaction set (``reactions``) after commit. Returns that set.

    ChatError: ``bad_emoji`` (not one of CHAT_REACTIONS), ``not_found``, ``banned``,
    ``muted``, ``rate_limited``, ``room_locked``. Asking for what is already so changes nothing.
    """
    draft = ReactionDraft(
        room_id=room.pk,
        room_slug=room.slug,
        user_id=user.pk,
        username=user.get_username(),
        message_id=message_id,
        emoji=emoji,
        on=on,
    )
    [result] = reaction_set_batch(drafts=[draft])
    if isinstance(result, ChatError):
        raise result
    return result


def reaction_set_batch(*, drafts: list[ReactionDraft]) -> list[protocol.Reactions | ChatError]:
    """Several reacts, in order, in one transaction; each gets its message's set after it
    (what its ``reactions`` frame carried), or the ChatError that refused it (see
    reaction_set). Checks that cost nothing come first; a react that would change nothing
    spends no rate and takes no seq."""
    results: list[protocol.Reactions | ChatError | None] = [None] * len(drafts)
    pending: list[int] = []
    for index, draft in enumerate(drafts):
        if draft.emoji not in settings.CHAT_REACTIONS:
            results[index] = ChatError("bad_emoji", f"emoji must be one of {' '.join(settings.CHAT_REACTIONS)}")
        else:
            pending.append(index)
    pending = _visible(drafts, pending, results)
    now = timezone.now()
    user_ids = sorted({drafts[i].user_id for i in pending})
    banned = message_store.sanctioned_pairs(sanction=Ban, user_ids=user_ids, now=now)
    muted = message_store.sanctioned_pairs(sanction=Mute, user_ids=user_ids, now=now)
    for index in list(pending):
        draft = drafts[index]
        if (draft.user_id, None) in banned or (draft.user_id, draft.room_id) in banned:
            results[index] = ChatError("banned", "you are banned from this room")
        elif (draft.user_id, None) in muted or (draft.user_id, draft.room_id) in muted:
            results[index] = ChatError("muted", "you are muted")
        else:
            continue
        pending.remove(index)
    # Which would change something, as the reactions are now: only those spend the rate
    # (one Redis round trip, outside the rooms' write locks).
    changing = _play(drafts, pending, _rows_of(drafts, pending)).changing
    waits = rate_limit_hits(user_ids=[drafts[i].user_id for i in changing])
    for index, wait in zip(changing, waits, strict=True):
        if wait:
            results[index] = ChatError("rate_limited", "too many changes", retry_after=round(wait, 3))
            pending.remove(index)
    if pending:
        _write(drafts, pending, results, now)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def _visible(drafts: list[ReactionDraft], pending: list[int], results: list[protocol.Reactions | ChatError | None]) -> list[int]:
    """``not_found`` for a react on no visible message of the draft's room; the others."""
    rooms = message_store.visible_message_rooms(message_ids=sorted({drafts[i].message_id for i in pending}))
    kept = []
    for index in pending:
        if rooms.get(drafts[index].message_id) == drafts[index].room_id:
            kept.append(index)
        else:
            results[index] = ChatError("not_found", f"no message {drafts[index].message_id} in this room")
    return kept


def _rows_of(drafts: list[ReactionDraft], pending: list[int]) -> list[ReactionRow]:
    return message_store.reactions_rows(message_ids=sorted({drafts[i].message_id for i in pending}))


@dataclass(slots=True)
class _Played:
    changing: list[int]  # the drafts that change something, in order
    sets: dict[int, protocol.Reactions]  # draft index -> its message's set after it
    inserted: OrderedDict[tuple[int, int, str], None]  # (message, user, emoji) to insert, in order
    deleted: list[int]  # reaction ids to delete


def _play(drafts: list[ReactionDraft], pending: list[int], rows: list[ReactionRow]) -> _Played:
    """Apply the drafts in order to the reactions as they are, in memory: which change
    something, each one's set after it, and the net inserts and deletes. New reactions go
    last, as their ids will put them, so each set is the one the database will hold."""
    per_message: dict[int, list[ReactionRow]] = {}
    for row in rows:
        per_message.setdefault(row.message_id, []).append(row)
    played = _Played(changing=[], sets={}, inserted=OrderedDict(), deleted=[])
    for index in pending:
        draft = drafts[index]
        current = per_message.setdefault(draft.message_id, [])
        mine = next((row for row in current if row.user_id == draft.user_id and row.emoji == draft.emoji), None)
        key = (draft.message_id, draft.user_id, draft.emoji)
        if draft.on and mine is None:
            current.append(ReactionRow(None, draft.message_id, draft.user_id, draft.emoji, draft.username))
            played.inserted[key] = None
            played.changing.append(index)
        elif not draft.on and mine is not None:
            current.remove(mine)
            if mine.id is None:
                del played.inserted[key]
            else:
                played.deleted.append(mine.id)
            played.changing.append(index)
        rows_now = [(row.message_id, row.emoji, row.username) for row in current]
        played.sets[index] = selectors.reaction_sets(rows=rows_now).get(draft.message_id, {})
    return played


def _write(
    drafts: list[ReactionDraft], pending: list[int], results: list[protocol.Reactions | ChatError | None], now: datetime
) -> None:
    with transaction.atomic():
        # The rooms' row locks (room-id order) serialise every change of these rooms until
        # commit, so what is read below is still so at commit and the seqs are ours.
        rooms = message_store.rooms_lock(room_ids=sorted({drafts[i].room_id for i in pending}))
        for index in list(pending):
            if rooms[drafts[index].room_id].locked:
                results[index] = ChatError("room_locked", "the room is locked")
                pending.remove(index)
        # Removed since the check above (a removal takes the room's lock too)?
        pending = _visible(drafts, pending, results)
        if not pending:
            return
        played = _play(drafts, pending, _rows_of(drafts, pending))
        for index in pending:
            results[index] = played.sets[index]
        if not played.changing:
            return
        if played.deleted:
            message_store.reactions_delete(ids=played.deleted)
        if played.inserted:
            message_store.reactions_insert(rows=list(played.inserted), created_at=now)
        seqs = {room_id: room.seq for room_id, room in rooms.items()}
        changes: list[tuple[int, int, int]] = []  # (room id, seq, message id) per changing draft
        frames: list[tuple[str, events.ExistingMessageChange]] = []
        for index in played.changing:
            draft = drafts[index]
            seqs[draft.room_id] += 1
            seq = seqs[draft.room_id]
            changes.append((draft.room_id, seq, draft.message_id))
            reactions = played.sets[index]
            frames.append((draft.room_slug, {"type": "reactions", "id": draft.message_id, "reactions": reactions, "seq": seq}))
        message_store.changes_insert(rows=changes, kind=RoomChange.Kind.REACTIONS, created_at=now)
        message_store.rooms_set_seq(seqs={room_id: seqs[room_id] for room_id, _, _ in changes})
        events.changes_on_commit(changes=frames)
