"""Text every database and socket can carry."""

from __future__ import annotations


def is_storable_text(value: str) -> bool:
    """Whether every database and socket can carry ``value``.

    JSON can spell a lone surrogate (``"\\ud800"``), and the parser turns it into a str
    that has no UTF-8 form: SQLite, PostgreSQL and the socket's encoder would all raise on
    it, failing a whole batch of other people's messages with it (found by
    tests/multiworker/test_fuzz.py). PostgreSQL also refuses NUL in text, so NUL is refused
    on every database alike rather than only on some.
    """
    if "\x00" in value:
        return False
    if value.isascii():  # the common case, checked without copying
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
