"""The queue without sockets: claim once, leases, retry, failure, cancel."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from django_tasks import TaskResultStatus, task_backends

from notifications.models import Notification
from tasks import kinds, services
from tasks.models import Task
from tasks.registry import TaskRequestError
from tasks.results import TaskWorkerLost
from tests.support.factories import make_room, make_user

pytestmark = pytest.mark.django_db


def countdown(owner) -> Task:
    return services.task_create(owner_id=owner.pk, body={"kind": "countdown", "steps": 3, "interval_ms": 10})


def expire_lease(task: Task) -> None:
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_a_task_is_claimed_once():
    task = countdown(make_user())
    [claimed] = services.task_claim(runner="a")
    assert claimed.pk == task.pk and claimed.status == "running" and claimed.attempts == 1
    assert services.task_claim(runner="b") == []
    assert Task.objects.get(pk=task.pk).lease_owner == "a"


def test_an_expired_lease_is_claimed_again_then_failed_after_the_last_attempt():
    owner = make_user()
    task = countdown(owner)
    services.task_claim(runner="dead")
    expire_lease(task)
    [retried] = services.task_claim(runner="alive")
    assert retried.pk == task.pk and retried.attempts == 2
    assert not services.task_finish(task_id=task.pk, runner="dead", status="succeeded"), "the old runner lost the task"
    expire_lease(task)
    assert services.task_claim(runner="third") == [], "no third attempt"
    [failed] = services.task_sweep()
    row = Task.objects.get(pk=task.pk)
    assert failed.pk == task.pk and row.status == "failed" and "task worker stopped" in row.error
    assert Notification.objects.filter(user=owner, kind="task").count() == 1


def test_leases_are_renewed_only_by_their_owner():
    task = countdown(make_user())
    services.task_claim(runner="a")
    before = Task.objects.get(pk=task.pk).lease_expires_at
    services.leases_renew(runner="b", progress={task.pk: 50})
    assert Task.objects.get(pk=task.pk).lease_expires_at == before
    services.leases_renew(runner="a", progress={task.pk: 50})
    row = Task.objects.get(pk=task.pk)
    assert before is not None and row.lease_expires_at is not None
    assert row.lease_expires_at > before and row.progress == 50


def test_cancel_a_queued_task_at_once_and_a_running_one_by_flag():
    owner = make_user()
    queued = countdown(owner)
    assert services.task_cancel(task=queued)
    assert Task.objects.get(pk=queued.pk).status == "cancelled"
    running = countdown(owner)
    services.task_claim(runner="a")
    assert not services.task_cancel(task=running)
    assert services.cancel_requested(task_ids=[running.pk]) == {running.pk}
    assert services.task_claim(runner="b") == []


def test_finish_records_the_outcome_and_notifies_the_owner():
    owner = make_user()
    task = countdown(owner)
    services.task_claim(runner="a")
    assert services.task_finish(task_id=task.pk, runner="a", status="succeeded", result={"steps": 3})
    row = Task.objects.get(pk=task.pk)
    assert (row.status, row.progress, row.result, row.lease_owner) == ("succeeded", 100, {"steps": 3}, "")
    assert Notification.objects.get(user=owner).data == {"task_id": task.pk, "kind": "countdown", "status": "succeeded"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"kind": "nope"}, "invalid"),
        ({}, "invalid"),
        ({"kind": "countdown", "steps": 0, "interval_ms": 1}, "invalid"),
        ({"kind": "countdown", "steps": "3", "interval_ms": 1}, "invalid"),
        ({"kind": "countdown", "steps": 3}, "invalid"),
        ({"kind": "summarize_room", "room": "missing"}, "no_such_room"),
        ({"kind": "summarize_room", "room": 5}, "no_such_room"),
    ],
)
def test_bad_task_requests(body, code):
    with pytest.raises(TaskRequestError) as raised:
        services.task_create(owner_id=make_user().pk, body=body)
    assert raised.value.code == code
    assert Task.objects.count() == 0


def test_summarize_room_is_accepted_for_an_existing_room():
    make_room("general")
    task = services.task_create(owner_id=make_user().pk, body={"kind": "summarize_room", "room": "general"})
    assert task.params == {"room": "general"}


def test_get_result_shows_the_runners_and_a_lost_worker():
    task = countdown(make_user())
    services.task_claim(runner="dead")
    expire_lease(task)
    services.task_claim(runner="also-dead")
    expire_lease(task)
    services.task_sweep()
    result = task_backends["default"].get_result(str(task.pk))
    assert result.status == TaskResultStatus.FAILED and result.worker_ids == ["dead", "also-dead"] and result.attempts == 2
    assert result.task is kinds.countdown and result.kwargs == {"steps": 3, "interval_ms": 10}
    [error] = result.errors
    assert error.exception_class is TaskWorkerLost and "task worker stopped" in error.traceback


@override_settings(TASKS_MAX_ACTIVE_PER_USER=2)
def test_a_client_may_have_so_many_tasks_queued_or_running():
    owner = make_user()
    countdown(owner), countdown(owner)
    with pytest.raises(TaskRequestError) as raised:
        countdown(owner)
    assert (raised.value.code, raised.value.kind, raised.value.retry_after) == ("busy", "rate_limited", 1)
    assert Task.objects.count() == 2
