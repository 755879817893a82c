from argparse import ArgumentParser
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from chat.services.moderation import MODERATORS_GROUP, moderator_make


class Command(BaseCommand):
    help = f"Make USERNAME a moderator: staff, and in the {MODERATORS_GROUP} group (see docs/moderation.md)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        moderator_make(user=user)
        self.stdout.write(f"{user.username} is a moderator: sign in at /admin/")
