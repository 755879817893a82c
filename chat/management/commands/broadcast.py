from argparse import ArgumentParser
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from chat import wire


class Command(BaseCommand):
    help = (
        "Send a notice to every socket of a room (--room SLUG) or of a user (--user USERNAME), "
        "on every worker, through Channels' group_send: at most once, nothing is stored."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--room", help="the room's slug: its group room.<slug>")
        target.add_argument("--user", help="a username: the group user.<id> of all their sockets")
        parser.add_argument("content", help="the notice's text")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["room"]:
            group = wire.room_group(options["room"])
        else:
            user = User.objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}")
            group = wire.user_group(user.pk)
        # This is all a Django developer writes: the consumers' room_notice handler does the rest.
        async_to_sync(get_channel_layer().group_send)(group, {"type": "room.notice", "content": options["content"]})
        self.stdout.write(f"sent to {group}")
