"""The SQL of a token stream's writes: its new conversation, its turns and its reply, for
SQLite and PostgreSQL alike.

Every stream that records its conversation writes here twice (the conversation and its
turns while the first token is on its way, the reply at the end), so these are
statements rather than ORM calls, as chat's message writes are (chat/message_store.py):
the ORM spent more CPU building each INSERT than the database spent running it, a tenth
of a worker's CPU under 50 short streams at once (docs/performance.md, "Eighth step").
Table and column names come from the models, so a renamed field cannot silently drift
from this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from streaming.models import Conversation, ConversationMessage

_CONVERSATION = Conversation._meta.db_table
_MESSAGE = ConversationMessage._meta.db_table
_MESSAGE_COLUMNS = (
    "conversation_id",
    "role",
    "content",
    "finish_reason",
    "stream_id",
    "prompt_tokens",
    "completion_tokens",
    "created_at",
)
_MESSAGE_INSERT = f"INSERT INTO {_MESSAGE} ({', '.join(_MESSAGE_COLUMNS)}) VALUES "
_MESSAGE_ROW = "(" + ", ".join(["%s"] * len(_MESSAGE_COLUMNS)) + ")"
# Rows per statement: 4,000 parameters, under SQLite's limit of 32,766 (and its older
# builds' 999 would need fewer: Debian's and the Docker image's are new) for a request
# that sends a long conversation at once.
ROWS_PER_INSERT = 500


def _conversation_key(conversation_id: str) -> Any:
    """The conversation's id as its column holds it (a uuid on PostgreSQL, 32 hex digits on SQLite)."""
    return Conversation._meta.pk.get_db_prep_value(conversation_id, connection)


def conversation_insert(*, conversation_id: str, owner_id: int, title: str, now: datetime) -> None:
    moment = connection.ops.adapt_datetimefield_value(now)
    sql = f"INSERT INTO {_CONVERSATION} (id, owner_id, title, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)"
    with connection.cursor() as cursor:
        cursor.execute(sql, [_conversation_key(conversation_id), owner_id, title, moment, moment])


def messages_insert(
    *,
    conversation_id: str,
    turns: Sequence[tuple[str, str]],
    now: datetime,
    finish_reason: str = "",
    stream_id: str = "",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> None:
    """Add ``turns`` ((role, content) each, in order) to a conversation, in one statement;
    the other columns are an assistant turn's (its stream and counts) or empty."""
    key, moment = _conversation_key(conversation_id), connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        for start in range(0, len(turns), ROWS_PER_INSERT):
            rows = turns[start : start + ROWS_PER_INSERT]
            params: list[Any] = []
            for role, content in rows:
                params += (key, role, content, finish_reason, stream_id, prompt_tokens, completion_tokens, moment)
            cursor.execute(_MESSAGE_INSERT + ", ".join([_MESSAGE_ROW] * len(rows)), params)
