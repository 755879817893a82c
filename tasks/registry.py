"""Task kinds: adding one is one registered function.

    @task_kind("countdown", validate=validate_countdown)
    async def countdown(context: TaskContext, params: dict) -> dict: ...

``validate`` turns the request body into the stored parameters (raising
TaskRequestError for a bad one); the function reports progress through the context
and returns the result (JSON).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


class TaskRequestError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class TaskContext(Protocol):
    task_id: int
    owner_id: int

    async def progress(self, percent: int, message: str) -> None: ...


TaskFunction = Callable[[TaskContext, dict[str, Any]], Awaitable[Any]]
Validator = Callable[[dict[str, Any]], dict[str, Any]]


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
