#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from core.env import ImproperlyConfiguredError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfiguredError as error:  # a variable missing or malformed: one line naming it
        sys.exit(f"manage.py: {error}")


if __name__ == "__main__":
    main()
