"""The models this server serves (docs/protocol.md, "Models").

``LLM_MODELS`` names them, as JSON: ``{"<name>": {"base_url", "api_key", "model",
"max_concurrent"}}``. A name with a ``base_url`` is an OpenAI-compatible upstream (the
``openai`` backend) asked for ``model`` (the name itself when left out); a name without
one is the echo model. ``max_concurrent`` caps the model's generations running at once,
across workers (streaming.limits), below ``LLM_MAX_CONCURRENT``.
The first name is the default: what the assistant and tasks use when no model is named.

Without ``LLM_MODELS`` the server serves one model, as before: ``echo``, or ``LLM_MODEL``
of ``LLM_BASE_URL`` with ``LLM_BACKEND=openai``. A bad ``LLM_MODELS`` fails at start-up
(StreamingConfig.ready) with a message naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from django.conf import settings

from core.env import ImproperlyConfiguredError, env_optional

ENV = "LLM_MODELS"
KEYS = frozenset({"base_url", "api_key", "model", "max_concurrent"})
MAX_NAME_CHARS = 200
# A bound on max_concurrent, far above any one model's real capacity: a typo (an extra
# zero or two) is refused rather than read as "no cap".
MAX_CONCURRENT_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One served model: its public ``name``, the backend that answers it and, for an
    ``openai`` one, where (``base_url``), with which key, and the upstream's model name;
    ``max_concurrent``: its cap on generations at once (None: only the global caps)."""

    name: str
    backend: Literal["echo", "openai"]
    base_url: str = ""
    api_key: str | None = None
    upstream_model: str = ""
    max_concurrent: int | None = None


def _bad(detail: str) -> ImproperlyConfiguredError:
    return ImproperlyConfiguredError(f"environment variable {ENV} {detail}")


def _name(name: str) -> str:
    if not name or len(name) > MAX_NAME_CHARS or any(c.isspace() or not c.isprintable() for c in name):
        raise _bad(f"names a model {name!r}: a name is 1 to {MAX_NAME_CHARS} printable characters without spaces")
    return name


@lru_cache(maxsize=8)
def parse(raw: str) -> tuple[ModelSpec, ...]:
    """The models of an ``LLM_MODELS`` value, in its order; ImproperlyConfiguredError naming
    the variable and what is wrong."""
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise _bad(f"must be a JSON object of models, got invalid JSON ({error})") from None
    if not isinstance(value, dict) or not value:
        raise _bad('must be a non-empty JSON object: {"<name>": {"base_url": ..., "api_key": ..., "model": ...}}')
    specs = []
    for name, entry in value.items():
        _name(name)
        if not isinstance(entry, dict):
            raise _bad(f"model {name!r} must be an object (with base_url, api_key, model; {{}} for the echo model)")
        unknown = sorted(set(entry) - KEYS)
        if unknown:
            raise _bad(f"model {name!r} has an unknown key {unknown[0]!r} (known: base_url, api_key, model, max_concurrent)")
        for key in ("base_url", "api_key", "model"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise _bad(f"model {name!r}: {key} must be a string")
        cap = _max_concurrent(name, entry.get("max_concurrent"))
        base_url = entry.get("base_url")
        if not base_url:
            if entry.get("api_key") or entry.get("model"):
                raise _bad(f"model {name!r} has api_key or model but no base_url (a model without base_url is the echo model)")
            specs.append(ModelSpec(name=name, backend="echo", max_concurrent=cap))
            continue
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _bad(f"model {name!r}: base_url must be an http(s) URL, got {base_url!r}")
        specs.append(
            ModelSpec(
                name=name,
                backend="openai",
                base_url=base_url.rstrip("/"),
                api_key=entry.get("api_key") or None,
                upstream_model=entry.get("model") or name,
                max_concurrent=cap,
            )
        )
    return tuple(specs)


def _max_concurrent(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENT_LIMIT:
        raise _bad(f"model {name!r}: max_concurrent must be a whole number from 1 to {MAX_CONCURRENT_LIMIT}, got {value!r}")
    return value


def models() -> tuple[ModelSpec, ...]:
    """Every served model, the default first."""
    raw = env_optional(ENV)
    if raw is not None:
        return parse(raw)
    if settings.LLM_BACKEND == "openai":
        return (
            ModelSpec(
                name=str(settings.LLM_MODEL),
                backend="openai",
                base_url=str(settings.LLM_BASE_URL).rstrip("/"),
                api_key=settings.LLM_API_KEY or None,
                upstream_model=str(settings.LLM_MODEL),
            ),
        )
    return (ModelSpec(name="echo", backend="echo"),)


def default() -> ModelSpec:
    return models()[0]


def find(name: str) -> ModelSpec | None:
    """The served model called ``name``, or None."""
    return next((spec for spec in models() if spec.name == name), None)


def check() -> None:
    """Parse the configuration once at start-up, so a bad one fails there (with its name)."""
    if env_optional(ENV) is not None and settings.LLM_BACKEND == "openai":
        raise ImproperlyConfiguredError(
            f"environment variables {ENV} and LLM_BACKEND=openai are both set: name the upstream in {ENV} instead"
        )
    models()
