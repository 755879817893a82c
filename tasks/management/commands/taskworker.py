import asyncio
import contextlib
import signal
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from tasks.runner import TaskRunner


class Command(BaseCommand):
    help = "Run queued tasks (several task workers may run; each task runs once)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--concurrency", type=int, default=settings.TASK_CONCURRENCY)

    def handle(self, *args: Any, **options: Any) -> None:
        async def main() -> None:
            # Ctrl-C (SIGINT) stops the worker even when it was started with SIGINT ignored,
            # as a shell's background jobs are: Python then installs no handler of its own.
            main_task = asyncio.current_task()
            assert main_task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, main_task.cancel)
            runner = TaskRunner(concurrency=options["concurrency"])
            self.stdout.write(f"task worker {runner.runner_id} running up to {runner.concurrency} tasks", ending="\n")
            self.stdout.flush()
            await runner.run_forever()

        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(main())
