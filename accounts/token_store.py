"""The SQL of the bearer-token lookup, for SQLite and PostgreSQL alike.

Every API request whose token is not remembered (accounts.token_cache: a person who types
between replies is never remembered) and every WebSocket handshake with a bearer token
looks its token and user up here, on the database thread, before anything else of the
request runs. Through the ORM (``select_related("user").filter(...).first()``) that cost
544 µs of CPU, nearly all of it building and compiling the queryset; this statement, with
the same instances built from its row, 59 µs (docs/performance.md, "Tenth step"; the same
pattern as chat/message_store.py). Columns and converters come from the models, so a
field added to either model is read here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Field, Model
from django.db.models.expressions import Col

from accounts.models import ApiToken


@dataclass(frozen=True, slots=True)
class _Columns:
    """A model's concrete fields as the ORM would read them: their attribute names and,
    per field, the converters the ORM applies to a value from this database."""

    model: type[Model]
    alias: str
    fields: list[Field[Any, Any]]
    attnames: list[str]
    columns: list[Col]  # what the ORM hands each converter
    converters: list[list[Any]]

    @classmethod
    def of(cls, model: type[Model], alias: str) -> _Columns:
        fields = list(model._meta.concrete_fields)
        columns = [field.get_col(alias) for field in fields]
        converters = [
            connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            for field, column in zip(fields, columns, strict=True)
        ]
        return cls(model, alias, fields, [field.attname for field in fields], columns, converters)

    def select(self) -> str:
        return ", ".join(f"{self.alias}.{connection.ops.quote_name(_column(field))}" for field in self.fields)

    def build(self, values: tuple[Any, ...]) -> Model:
        converted = list(values)
        for index, converters in enumerate(self.converters):
            for converter in converters:
                converted[index] = converter(converted[index], self.columns[index], connection)
        return self.model.from_db(connection.alias, self.attnames, converted)


def _column(field: Any) -> str:
    column = field.column
    assert isinstance(column, str), field  # a concrete field has one
    return column


@dataclass(frozen=True, slots=True)
class _Lookup:
    sql: str
    token: _Columns
    user: _Columns


_lookups: dict[str, _Lookup] = {}  # by database vendor: built once per process


def _lookup() -> _Lookup:
    found = _lookups.get(connection.vendor)
    if found is None:
        user_model = get_user_model()
        token, user = _Columns.of(ApiToken, "t"), _Columns.of(user_model, "u")
        quote = connection.ops.quote_name
        user_pk, token_user = _column(user_model._meta.pk), _column(ApiToken._meta.get_field("user"))
        found = _Lookup(
            sql=(
                f"SELECT {token.select()}, {user.select()}"
                f" FROM {quote(ApiToken._meta.db_table)} t JOIN {quote(user_model._meta.db_table)} u"
                f" ON u.{quote(user_pk)} = t.{quote(token_user)}"
                " WHERE t.token_hash = %s AND t.revoked_at IS NULL AND u.is_active = %s"
            ),
            token=token,
            user=user,
        )
        _lookups[connection.vendor] = found
    return found


def token_with_user(*, token_hash: str) -> ApiToken | None:
    """The unrevoked token with this hash, its active user selected with it, or None: the
    instances ``ApiToken.objects.select_related("user")`` would give."""
    lookup = _lookup()
    with connection.cursor() as cursor:
        cursor.execute(lookup.sql, [token_hash, True])
        row = cursor.fetchone()
    if row is None:
        return None
    count = len(lookup.token.fields)
    token = lookup.token.build(row[:count])
    token.user = lookup.user.build(row[count:])  # type: ignore[attr-defined]
    assert isinstance(token, ApiToken)
    return token
