"""The kinds clients may start by name, and the tasks app's refusals.

A kind is a Django task (``@task``, django-tasks' API) registered under a public name,
with a validator for the request body of ``POST /api/tasks/``:

    @startable("countdown", validate=validate_countdown)
    @task(takes_context=True)
    async def countdown(context: TaskContext, *, steps: int, interval_ms: int) -> dict: ...

``validate(body, owner_id=...)`` turns the request body into the task's keyword
arguments, as the owner may ask for them (raising TaskRequestError for a bad one). Any
other ``@task`` runs when code enqueues it (``.enqueue()``); only registered kinds may be
started over HTTP.

A task row names its task by ``kind``: the registered name, else the function's dotted
module path (``task_kind_name``); the runner turns it back into the task (``task_for_kind``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from django.utils.module_loading import import_string
from django_tasks.base import Task as DjangoTask

from core.errors import DomainError

P = ParamSpec("P")
T = TypeVar("T")

# The length of Task.kind: a dotted module path (tests.tasks.test_backend.slow_count) fits.
KIND_MAX_LENGTH = 200
# Registered names are plain words, so they never collide with a module path (which has dots).
_NAME = re.compile(r"[a-z][a-z0-9_]{0,49}")


class TaskRequestError(DomainError):
    """A task request refused: an unknown kind, bad parameters, a per-user limit, a task
    the user may not see. ``kind`` says which sort (REST answers with its status)."""


class Validator(Protocol):
    def __call__(self, body: dict[str, Any], *, owner_id: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TaskKind:
    name: str
    task: DjangoTask[Any, Any]
    validate: Validator


KINDS: dict[str, TaskKind] = {}


def startable(name: str, *, validate: Validator) -> Callable[[DjangoTask[P, T]], DjangoTask[P, T]]:
    """Register a ``@task`` under ``name`` so that ``POST /api/tasks/ {"kind": name}`` starts it."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a kind's name is a lower-case word (letters, digits, _), got {name!r}")

    def register(task: DjangoTask[P, T]) -> DjangoTask[P, T]:
        KINDS[name] = TaskKind(name=name, task=task, validate=validate)
        return task

    return register


def task_kind_name(task: DjangoTask[Any, Any]) -> str:
    """What a row of ``task`` stores as its kind: the registered name, else the module path."""
    for kind in KINDS.values():
        if kind.task.func is task.func:  # task.using(...) is another object with the same function
            return kind.name
    return task.module_path


def task_for_kind(kind: str) -> DjangoTask[Any, Any]:
    """The task a row's kind names; LookupError if nothing (any more) does."""
    registered = KINDS.get(kind)
    if registered is not None:
        return registered.task
    try:
        found = import_string(kind)
    except ImportError:
        raise LookupError(f"no task is named {kind!r}") from None
    if not isinstance(found, DjangoTask):
        raise LookupError(f"{kind!r} is not a task (decorate it with @task)")
    return found
