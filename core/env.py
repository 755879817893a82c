"""Configuration from the environment: the environment first, then a default.

Every setting the server reads goes through these helpers so that a missing
required value fails at start-up with its name, and booleans parse strictly
("yes" or "1" mean true, a typo is an error rather than a silent false).
"""

from __future__ import annotations

import os
from typing import Final

_MISSING: Final = object()
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class ImproperlyConfiguredError(RuntimeError):
    """A setting is missing or cannot be parsed; the message names the variable."""


def env_str(name: str, default: str | object = _MISSING) -> str:
    """Return the variable's value, or ``default``; fail with its name when required."""
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is _MISSING:
        raise ImproperlyConfiguredError(f"environment variable {name} is required but not set")
    return str(default)


def env_optional(name: str) -> str | None:
    """Return the variable's value, or None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfiguredError(f"environment variable {name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfiguredError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def env_optional_int(name: str, *, minimum: int | None = None) -> int | None:
    if env_optional(name) is None:
        return None
    return env_int(name, 0, minimum=minimum)


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfiguredError(f"environment variable {name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; blanks around items are ignored."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]
