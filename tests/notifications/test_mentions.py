import pytest

from notifications.mentions import PostedMessage, mentioned_usernames, mentions_notify
from notifications.models import Notification
from tests.factories import make_user

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
