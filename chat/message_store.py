"""The SQL of the message write path, for SQLite and PostgreSQL alike.

Every chat message goes through these four statements, so they are written as SQL
rather than built by the ORM: compiling a queryset costs about 250 µs of CPU, more
than running the statement, and measured 1.7 ms of CPU per single-message batch
against 0.3 ms this way (docs/performance.md). Table and column names come from the
models, so a renamed field cannot silently drift from this file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from chat.models import Message, Mute, Room

_MESSAGE = Message._meta.db_table
_MUTE = Mute._meta.db_table
_ROOM = Room._meta.db_table


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def muted_pairs(*, user_ids: list[int], now: datetime) -> set[tuple[int, int | None]]:
    """(user id, room id or None for site-wide) of the active mutes of these users."""
    if not user_ids:
        return set()
    sql = (
        f"SELECT user_id, room_id FROM {_MUTE} WHERE user_id IN ({_placeholders(len(user_ids))})"
        " AND lifted_at IS NULL AND (ends_at IS NULL OR ends_at > %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*user_ids, connection.ops.adapt_datetimefield_value(now)])
        return {(user_id, room_id) for user_id, room_id in cursor.fetchall()}


@dataclass(frozen=True, slots=True)
class LockedRoom:
    locked: bool
    last_message_id: int
    direct_key: str | None  # set for a direct-message room


def rooms_lock(*, room_ids: list[int]) -> dict[int, LockedRoom]:
    """Lock the rooms' rows until commit (in id order: no deadlocks)."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    placeholders = _placeholders(len(room_ids))
    sql = f"SELECT id, locked, last_message_id, direct_key FROM {_ROOM} WHERE id IN ({placeholders}) ORDER BY id{lock}"
    with connection.cursor() as cursor:
        cursor.execute(sql, room_ids)
        return {room_id: LockedRoom(bool(locked), last_id, key) for room_id, locked, last_id, key in cursor.fetchall()}


def messages_insert(*, rows: list[tuple[int, int, str, str]], created_at: datetime) -> list[int]:
    """Insert (room id, user id, content, nonce) rows; their ids, in the same order."""
    created = connection.ops.adapt_datetimefield_value(created_at)
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for room_id, user_id, content, nonce in rows:
        params += [room_id, user_id, content, nonce, created]
    columns = "room_id, user_id, content, nonce"
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


def rooms_set_last_message(*, last_ids: dict[int, int]) -> None:
    cases = " ".join(["WHEN %s THEN %s"] * len(last_ids))
    params: list[int] = []
    for room_id, last_id in last_ids.items():
        params += [room_id, last_id]
    sql = f"UPDATE {_ROOM} SET last_message_id = CASE id {cases} END WHERE id IN ({_placeholders(len(last_ids))})"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *last_ids])
