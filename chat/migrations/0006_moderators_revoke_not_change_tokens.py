"""The Moderators group revokes tokens through the admin action's own permission and no
longer has ``change_apitoken``, which let them edit a token's revocation by hand.

Only these two permissions move, so a group changed on purpose keeps its other changes;
chat.services.moderation.MODERATOR_PERMISSIONS is the list a fresh group gets, and a test keeps the
two equal.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Moderators"
REMOVED = ("accounts", "change_apitoken")
ADDED = ("accounts", "revoke_apitoken")


def _move(apps, *, take: tuple[str, str], give: tuple[str, str]) -> None:
    # As in 0003: on a fresh database the new permission does not exist before post_migrate.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group = apps.get_model("auth", "Group").objects.filter(name=GROUP).first()
    if group is None:
        return  # chat.services.moderation.moderator_make creates it, with the current list
    Permission = apps.get_model("auth", "Permission")
    group.permissions.remove(*Permission.objects.filter(content_type__app_label=take[0], codename=take[1]))
    group.permissions.add(Permission.objects.get(content_type__app_label=give[0], codename=give[1]))


def forwards(apps, schema_editor):
    _move(apps, take=REMOVED, give=ADDED)


def backwards(apps, schema_editor):
    _move(apps, take=ADDED, give=REMOVED)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0005_room_publish_permission_and_audit_kinds"),
        ("accounts", "0002_apitoken_revoke_permission"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
