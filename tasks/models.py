"""A task is a row: the queue, its state and its outcome all live here (the row is the truth).

Rows are made by Django's task API (``.enqueue()``, tasks.backend): ``kind`` names the
task, ``args`` and ``params`` are the positional and keyword arguments it is called with.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Task(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks")
    # A registered kind's name (tasks.registry), else the task function's dotted module path.
    kind = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    params = models.JSONField(default=dict)  # the keyword arguments
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # What Django's TaskResult.errors shows: [{"exception_class_path", "traceback"}] per failed attempt.
    errors = models.JSONField(default=list, blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker_ids = models.JSONField(default=list, blank=True)  # the runner of each attempt
    # Who runs it and until when: a runner that stops renewing loses the task.
    lease_owner = models.CharField(max_length=40, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"
