"""Kinds by name: which tasks clients may start, how a row names its task, and the
tasks app's refusals (DomainErrors: a code and a kind, never an HTTP status)."""

from __future__ import annotations

import pytest
from django_tasks import task

from core.errors import DomainError
from tasks import kinds
from tasks.registry import KINDS, TaskRequestError, startable, task_for_kind, task_kind_name


@task()
def unregistered() -> None:
    """A task code may enqueue, but no client may start."""


def test_the_built_in_kinds_are_registered_django_tasks():
    assert sorted(KINDS) == ["countdown", "summarize_room"]
    assert KINDS["countdown"].task is kinds.countdown and kinds.countdown.takes_context
    assert task_kind_name(kinds.countdown) == "countdown", "a registered task's rows carry its public name"
    assert task_kind_name(kinds.countdown.using(queue_name="default")) == "countdown"
    assert task_for_kind("countdown") is kinds.countdown


def test_an_unregistered_task_is_named_by_its_module_path():
    assert task_kind_name(unregistered) == "tests.tasks.test_registry.unregistered"
    assert task_for_kind("tests.tasks.test_registry.unregistered") is unregistered
    for nothing in ("tests.tasks.test_registry.nothing_here", "no_such_kind", "tests.tasks.test_registry.KINDS"):
        with pytest.raises(LookupError):
            task_for_kind(nothing)


def test_a_registered_name_is_a_plain_word():
    with pytest.raises(ValueError, match="lower-case word"):
        startable("tests.looks.like.a.path", validate=lambda body, *, owner_id: {})


def test_task_request_errors_are_domain_errors_with_a_kind_not_a_status():
    error = TaskRequestError("busy", "wait", kind="rate_limited", retry_after=1)
    assert isinstance(error, DomainError)
    assert (error.code, error.kind, error.http_status) == ("busy", "rate_limited", 429)
    assert error.http_headers() == {"Retry-After": "1"}
    assert not hasattr(error, "status") and TaskRequestError("invalid", "x").http_status == 400
