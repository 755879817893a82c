"""The SQL of the message and reaction write paths, for SQLite and PostgreSQL alike.

Every chat message and every reaction goes through these statements, so they are written
as SQL rather than built by the ORM: compiling a queryset costs about 250 µs of CPU, more
than running the statement, and measured 1.7 ms of CPU per single-message batch
against 0.3 ms this way (docs/performance.md; a reaction through the ORM took 14 queries
and 9.1 ms). Table and column names come from the models, so a renamed field cannot
silently drift from this file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection

from chat.models import Ban, Message, Mute, Reaction, Room, RoomChange

_MESSAGE = Message._meta.db_table
_ROOM = Room._meta.db_table
_CHANGE = RoomChange._meta.db_table
_REACTION = Reaction._meta.db_table
_USER = get_user_model()._meta.db_table
_USERNAME = get_user_model().USERNAME_FIELD


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def sanctioned_pairs(*, sanction: type[Ban] | type[Mute], user_ids: list[int], now: datetime) -> set[tuple[int, int | None]]:
    """(user id, room id or None for site-wide) of the active bans or mutes of these users."""
    if not user_ids:
        return set()
    sql = (
        f"SELECT user_id, room_id FROM {sanction._meta.db_table} WHERE user_id IN ({_placeholders(len(user_ids))})"
        " AND lifted_at IS NULL AND (ends_at IS NULL OR ends_at > %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*user_ids, connection.ops.adapt_datetimefield_value(now)])
        return {(user_id, room_id) for user_id, room_id in cursor.fetchall()}


@dataclass(frozen=True, slots=True)
class LockedRoom:
    locked: bool
    seq: int  # the room's change counter before this write
    direct_key: str | None  # set for a direct-message room


def rooms_lock(*, room_ids: list[int]) -> dict[int, LockedRoom]:
    """Lock the rooms' rows until commit (in id order: no deadlocks). Their seqs are read
    under the lock, so they are the rooms' own until commit (SQLite: writers serialised)."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    placeholders = _placeholders(len(room_ids))
    sql = f"SELECT id, locked, seq, direct_key FROM {_ROOM} WHERE id IN ({placeholders}) ORDER BY id{lock}"
    with connection.cursor() as cursor:
        cursor.execute(sql, room_ids)
        return {room_id: LockedRoom(bool(locked), seq, key) for room_id, locked, seq, key in cursor.fetchall()}


def messages_insert(*, rows: list[tuple[int, int, str, str, int | None]], created_at: datetime) -> list[int]:
    """Insert (room id, user id, content, nonce, reply_to id) rows; their ids, in the same order."""
    created = connection.ops.adapt_datetimefield_value(created_at)
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for room_id, user_id, content, nonce, reply_to in rows:
        params += [room_id, user_id, content, nonce, reply_to, created]
    columns = "room_id, user_id, content, nonce, reply_to_id"
    sql = f"INSERT INTO {_MESSAGE} ({columns}, created_at) VALUES {values} RETURNING id, {columns}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    # Neither SQLite nor PostgreSQL promises to emit RETURNING rows in VALUES order, but
    # both number the rows as they insert them, in VALUES order: so each row gets the
    # smallest id returned for its own values (identical rows are interchangeable).
    ids_by_row: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for message_id, *values_of_row in sorted(returned):
        ids_by_row[tuple(values_of_row)].append(message_id)
    return [ids_by_row[row].pop(0) for row in rows]


def rooms_advance(*, last_ids: dict[int, int], seqs: dict[int, int]) -> None:
    """Set each room's newest message id and its change counter (same keys in both)."""
    cases = " ".join(["WHEN %s THEN %s"] * len(last_ids))
    id_params: list[int] = []
    seq_params: list[int] = []
    for room_id, last_id in last_ids.items():
        id_params += [room_id, last_id]
        seq_params += [room_id, seqs[room_id]]
    sql = (
        f"UPDATE {_ROOM} SET last_message_id = CASE id {cases} END, seq = CASE id {cases} END"
        f" WHERE id IN ({_placeholders(len(last_ids))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*id_params, *seq_params, *last_ids])


def changes_insert(*, rows: list[tuple[int, int, int]], kind: str, created_at: datetime) -> None:
    """Insert (room id, seq, message id) rows of the room change log, all of one kind."""
    created = connection.ops.adapt_datetimefield_value(created_at)
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for room_id, seq, message_id in rows:
        params += [room_id, seq, message_id, kind, created]
    sql = f"INSERT INTO {_CHANGE} (room_id, seq, message_id, kind, created_at) VALUES {values}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def rooms_set_seq(*, seqs: dict[int, int]) -> None:
    """Set each room's change counter (rooms locked by rooms_lock in this transaction)."""
    cases = " ".join(["WHEN %s THEN %s"] * len(seqs))
    params: list[int] = []
    for room_id, seq in seqs.items():
        params += [room_id, seq]
    sql = f"UPDATE {_ROOM} SET seq = CASE id {cases} END WHERE id IN ({_placeholders(len(seqs))})"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *seqs])


def visible_message_rooms(*, message_ids: list[int]) -> dict[int, int]:
    """message id -> room id, of the messages among these that exist and are not removed."""
    if not message_ids:
        return {}
    sql = f"SELECT id, room_id FROM {_MESSAGE} WHERE id IN ({_placeholders(len(message_ids))}) AND removed_at IS NULL"
    with connection.cursor() as cursor:
        cursor.execute(sql, message_ids)
        return dict(cursor.fetchall())


@dataclass(slots=True)
class ReactionRow:
    id: int | None  # None: not inserted yet
    message_id: int
    user_id: int
    emoji: str
    username: str


def reactions_rows(*, message_ids: list[int]) -> list[ReactionRow]:
    """The reactions on these messages, in the order they were made (id order)."""
    if not message_ids:
        return []
    sql = (
        f"SELECT r.id, r.message_id, r.user_id, r.emoji, u.{_USERNAME} FROM {_REACTION} r"
        f" JOIN {_USER} u ON u.id = r.user_id WHERE r.message_id IN ({_placeholders(len(message_ids))}) ORDER BY r.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, message_ids)
        return [ReactionRow(*row) for row in cursor.fetchall()]


def reactions_insert(*, rows: list[tuple[int, int, str]], created_at: datetime) -> None:
    """Insert (message id, user id, emoji) rows, numbered in this order."""
    created = connection.ops.adapt_datetimefield_value(created_at)
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for message_id, user_id, emoji in rows:
        params += [message_id, user_id, emoji, created]
    sql = f"INSERT INTO {_REACTION} (message_id, user_id, emoji, created_at) VALUES {values}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def reactions_delete(*, ids: list[int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_REACTION} WHERE id IN ({_placeholders(len(ids))})", ids)
