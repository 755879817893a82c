"""The room change log (docs/protocol.md, "Room changes"), edits, replies, reactions and
read markers.

Existing data: every existing message gets a ``created`` change, numbered in id order per
room, and each room's ``seq`` is its count, so that ``last_seq`` resumes work on old rooms
too. The members' ``last_read_id`` (private rooms' unread counts) become read markers.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


BATCH = 1000


def number_existing_messages(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    Message = apps.get_model("chat", "Message")
    RoomChange = apps.get_model("chat", "RoomChange")
    for room_id in Room.objects.values_list("pk", flat=True):
        seq = 0
        batch = []
        for message_id, created_at in Message.objects.filter(room_id=room_id).order_by("pk").values_list("pk", "created_at").iterator():
            seq += 1
            batch.append(RoomChange(room_id=room_id, seq=seq, message_id=message_id, kind="created", created_at=created_at))
            if len(batch) >= BATCH:
                RoomChange.objects.bulk_create(batch)
                batch = []
        RoomChange.objects.bulk_create(batch)
        Room.objects.filter(pk=room_id).update(seq=seq)


def read_markers_from_members(apps, schema_editor):
    RoomMember = apps.get_model("chat", "RoomMember")
    ReadMarker = apps.get_model("chat", "ReadMarker")
    ReadMarker.objects.bulk_create(
        ReadMarker(user_id=user_id, room_id=room_id, message_id=last_read_id)
        for user_id, room_id, last_read_id in RoomMember.objects.filter(last_read_id__gt=0).values_list(
            "user_id", "room_id", "last_read_id"
        )
    )


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0006_moderators_revoke_not_change_tokens'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='edited_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='message',
            name='reply_to',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.message'),
        ),
        migrations.AddField(
            model_name='room',
            name='seq',
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.CreateModel(
            name='MessageEdit',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('content_before', models.TextField()),
                ('edited_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('edited_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('message', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='edits', to='chat.message')),
            ],
            options={
                'ordering': ['message', 'id'],
            },
        ),
        migrations.CreateModel(
            name='Reaction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('emoji', models.CharField(max_length=16)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('message', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='reactions', to='chat.message')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['message', 'id'],
                'constraints': [models.UniqueConstraint(fields=('message', 'user', 'emoji'), name='chat_reaction_once')],
            },
        ),
        migrations.CreateModel(
            name='ReadMarker',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('message_id', models.BigIntegerField()),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('room', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='chat.room')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('user', 'room'), name='chat_read_marker_once')],
            },
        ),
        migrations.CreateModel(
            name='RoomChange',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('seq', models.BigIntegerField()),
                ('kind', models.CharField(choices=[('created', 'Created'), ('edited', 'Edited'), ('removed', 'Removed'), ('restored', 'Restored'), ('reactions', 'Reactions')], max_length=10)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('message', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='changes', to='chat.message')),
                ('room', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='changes', to='chat.room')),
            ],
            options={
                'ordering': ['room', 'seq'],
                'constraints': [models.UniqueConstraint(fields=('room', 'seq'), name='chat_room_change_seq_once')],
            },
        ),
        migrations.RunPython(number_existing_messages, migrations.RunPython.noop),
        migrations.RunPython(read_markers_from_members, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='roommember',
            name='last_read_id',
        ),
    ]
