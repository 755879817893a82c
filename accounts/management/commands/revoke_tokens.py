from argparse import ArgumentParser
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiToken
from accounts.services import token_revoke


class Command(BaseCommand):
    help = (
        "Revoke USERNAME's bearer tokens (all of them, or those whose prefix is given). "
        "Every connection they authenticated ends, on every worker."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--prefix", default="", help="only the token whose shown prefix starts with this")

    def handle(self, *args: Any, **options: Any) -> None:
        if not User.objects.filter(username=options["username"]).exists():
            raise CommandError(f"no user {options['username']!r}")
        tokens = ApiToken.objects.filter(
            user__username=options["username"], revoked_at__isnull=True, prefix__startswith=options["prefix"]
        )
        revoked = 0
        for token in tokens:
            token_revoke(token=token)
            revoked += 1
        self.stdout.write(f"revoked {revoked} token(s)")
