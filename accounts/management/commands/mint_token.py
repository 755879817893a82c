from argparse import ArgumentParser
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from accounts.services import token_create, user_get_or_create


class Command(BaseCommand):
    help = "Mint a bearer token for USERNAME and print it as the last line of output."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="create the user if missing")
        parser.add_argument("--staff", action="store_true", help="make the user staff")
        parser.add_argument("--name", default="minted", help="a label for the token")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_get_or_create(username=options["username"], create=options["create"], staff=options["staff"])
        except User.DoesNotExist:
            raise CommandError(f"no user {options['username']!r}; pass --create to make one") from None
        _token, raw = token_create(user=user, name=options["name"])
        self.stdout.write(raw)
