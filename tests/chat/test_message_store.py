"""The plain-SQL write path: ids map to their rows whatever order RETURNING emits them in."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from chat import message_store
from chat.models import Message
from tests.support.factories import make_room, make_user

pytestmark = pytest.mark.django_db


class _ReversedReturning:
    """A connection whose cursors hand RETURNING rows back in reverse, as a database may."""

    def __init__(self) -> None:
        self.ops = connection.ops

    def cursor(self) -> Any:
        real = connection.cursor()

        class Cursor:
            def __enter__(self) -> Cursor:
                real.__enter__()
                return self

            def __exit__(self, *exc: Any) -> None:
                real.__exit__(*exc)

            def execute(self, sql: str, params: Any) -> None:
                real.execute(sql, params)

            def fetchall(self) -> list[Any]:
                return list(reversed(real.fetchall()))

        return Cursor()


@pytest.mark.parametrize("returning", ["as the database emits it", "reversed"])
def test_each_row_gets_its_own_id_in_values_order(returning: str, monkeypatch: pytest.MonkeyPatch):
    if returning == "reversed":
        monkeypatch.setattr(message_store, "connection", _ReversedReturning())
    room, other = make_room("lobby"), make_room("other")
    amy, bob = make_user("amy"), make_user("bob")
    rows: list[tuple[int, int, str, str, int | None]] = [
        (room.pk, amy.pk, "same words", "", None),
        (other.pk, bob.pk, "elsewhere", "n1", None),
        (room.pk, amy.pk, "same words", "", None),  # identical to the first: interchangeable
        (room.pk, bob.pk, "last", "n2", None),
    ]
    ids = message_store.messages_insert(rows=rows, created_at=timezone.now())
    assert ids == sorted(ids) and len(set(ids)) == 4, "ids ascend in the order of the rows"
    stored = {m.pk: (m.room_id, m.user_id, m.content, m.nonce, m.reply_to_id) for m in Message.objects.filter(pk__in=ids)}
    assert [stored[i] for i in ids] == rows
