"""Task kinds: adding one is one registered function.

    @task_kind("countdown", validate=validate_countdown)
    async def countdown(context: TaskContext, params: dict) -> dict: ...

``validate(body, owner_id=...)`` turns the request body into the stored parameters,
as the owner may ask for them (raising TaskRequestError for a bad one); the function reports progress through the context
and returns the result (JSON).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from core.http import ApiError


class TaskRequestError(ApiError):
    """A task request refused: its HTTP status, code and detail."""


class TaskContext(Protocol):
    task_id: int
    owner_id: int

    async def progress(self, percent: int, message: str) -> None: ...


TaskFunction = Callable[[TaskContext, dict[str, Any]], Awaitable[Any]]


class Validator(Protocol):
    def __call__(self, body: dict[str, Any], *, owner_id: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TaskKind:
    name: str
    run: TaskFunction
    validate: Validator


KINDS: dict[str, TaskKind] = {}


def task_kind(name: str, *, validate: Validator) -> Callable[[TaskFunction], TaskFunction]:
    def register(function: TaskFunction) -> TaskFunction:
        KINDS[name] = TaskKind(name=name, run=function, validate=validate)
        return function

    return register
