"""The Moderators group: staff who moderate through the admin without being superusers.

The permission list is frozen here, as migrations must be; chat.services.moderation.MODERATOR_PERMISSIONS
is the same list for `manage.py make_moderator`, and a test keeps the two equal.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Moderators"

PERMISSIONS = [
    ("chat", "view_room"),
    ("chat", "change_room"),
    ("chat", "view_message"),
    ("chat", "change_message"),
    ("chat", "view_report"),
    ("chat", "change_report"),
    ("chat", "view_ban"),
    ("chat", "add_ban"),
    ("chat", "change_ban"),
    ("chat", "view_mute"),
    ("chat", "add_mute"),
    ("chat", "change_mute"),
    ("chat", "view_moderationaction"),
    ("auth", "view_user"),
    ("accounts", "view_apitoken"),
    ("accounts", "change_apitoken"),
]


def create_group(apps, schema_editor):
    # Permissions are normally created by post_migrate, after every migration has run;
    # on a fresh database they do not exist yet at this point, so create them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    permissions = [Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in PERMISSIONS]
    group.permissions.set(permissions)


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0002_report_moderationaction"),
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
