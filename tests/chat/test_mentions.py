import pytest

from chat.mentions import PostedMessage, mentioned_usernames, mentions_notify
from chat.services.rooms import member_add, room_create
from notifications.models import Notification
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("hi @bob", {"bob"}),
        ("@bob, @carol.", {"bob", "carol"}),
        ("mail me at bob@example.com", set()),
        ("@@bob", set()),
        ("no mentions", set()),
        ("@a.b_c-d+e!", {"a.b_c-d+e"}),
    ],
)
def test_mentions_are_found(content, names):
    assert mentioned_usernames(content) == names


def test_mentioned_users_are_notified_once_and_never_the_author():
    author, bob = make_user("amy"), make_user("bob")
    posted = PostedMessage(message_id=7, room_slug="lobby", author_id=author.pk, author="amy", content="@bob @bob @amy @ghost hi")
    assert mentions_notify(messages=[posted]) == 1
    notification = Notification.objects.get()
    assert notification.user == bob and notification.kind == "mention"
    assert notification.data == {"room": "lobby", "from": "amy", "message_id": 7, "content": "@bob @bob @amy @ghost hi"}


def test_a_mention_in_a_private_room_notifies_members_only():
    amy, bob, eve = make_user("amy"), make_user("bob"), make_user("eve")
    room = room_create(slug="club", title="Club", created_by=amy, private=True)
    member_add(room=room, user=bob, added_by=amy)
    posted = PostedMessage(message_id=9, room_slug="club", author_id=amy.pk, author="amy", content="@bob @eve secret plans")
    assert mentions_notify(messages=[posted]) == 1
    assert [n.user for n in Notification.objects.all()] == [bob], "eve is not in the room: its content never reaches her"
    assert eve.pk not in Notification.objects.values_list("user_id", flat=True)
