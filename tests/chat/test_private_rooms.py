"""Private rooms and direct messages: services, REST and the socket, in process."""

from __future__ import annotations

import json
import threading

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client

from chat import selectors
from chat.models import Room, RoomMember
from chat.services.messages import message_create
from chat.services.rooms import MembershipError, dm_open, member_add, member_remove, read_marker_move, room_create
from config.asgi import application
from notifications.models import Notification
from tests.support.factories import make_token, make_user


def api(user) -> Client:
    return Client(headers={"Authorization": f"Bearer {make_token(user)}"})


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db
class TestMembershipRules:
    def test_the_creator_owns_a_private_room_and_members_add_others(self):
        owner, bob, eve = make_user("owner"), make_user("bob"), make_user("eve")
        room = room_create(slug="club", title="Club", created_by=owner, private=True)
        assert selectors.room_members(room=room) == [{"username": "owner", "role": "owner"}]
        member_add(room=room, user=bob, added_by=owner)
        member_add(room=room, user=eve, added_by=bob)  # any member may invite
        assert [m["username"] for m in selectors.room_members(room=room)] == ["owner", "bob", "eve"]
        with pytest.raises(MembershipError) as raised:
            member_add(room=room, user=make_user("zed"), added_by=make_user("outsider"))
        assert raised.value.kind == "forbidden"

    def test_removal_rules(self):
        owner, bob, eve = make_user("owner"), make_user("bob"), make_user("eve")
        room = room_create(slug="club", title="Club", created_by=owner, private=True)
        for user in (bob, eve):
            member_add(room=room, user=user, added_by=owner)
        with pytest.raises(MembershipError) as raised:
            member_remove(room=room, user=eve, removed_by=bob)
        assert raised.value.kind == "forbidden", "a member cannot remove someone else"
        member_remove(room=room, user=bob, removed_by=bob)  # leaving
        member_remove(room=room, user=eve, removed_by=owner)
        assert selectors.room_members(room=room) == [{"username": "owner", "role": "owner"}]

    def test_private_rooms_are_invisible_to_outsiders_but_not_to_staff_over_rest(self):
        owner, outsider, staff = make_user("owner"), make_user("outsider"), make_user("mod", staff=True)
        room = room_create(slug="club", title="Club", created_by=owner, private=True)
        assert selectors.room_get_for(slug="club", user=outsider) is None
        assert selectors.room_get_for(slug="club", user=staff) == room
        assert selectors.room_get_for(slug="club", user=staff, staff_sees_private=False) is None
        assert room not in selectors.room_list_for(user=outsider) and room in selectors.room_list_for(user=owner)

    def test_unread_counts_follow_the_read_marker(self):
        owner, bob = make_user("owner"), make_user("bob")
        room = room_create(slug="club", title="Club", created_by=owner, private=True)
        member_add(room=room, user=bob, added_by=owner)
        first = message_create(room=room, user=owner, content="one")
        second = message_create(room=room, user=owner, content="two")
        assert selectors.room_unread_counts(user_id=bob.pk, room_ids=[room.pk]) == {room.pk: 2}
        read_marker_move(room=room, user=bob, message_id=second.pk)
        read_marker_move(room=room, user=bob, message_id=first.pk)  # never backwards
        assert selectors.room_unread_counts(user_id=bob.pk, room_ids=[room.pk]) == {room.pk: 0}

    def test_a_direct_message_room_is_one_room_whoever_asks(self):
        amy, ben = make_user("amy"), make_user("ben")
        room, created = dm_open(user=amy, other=ben)
        again, created_again = dm_open(user=ben, other=amy)
        assert created and not created_again and again == room
        assert room.slug.startswith("dm-") and room.private
        assert sorted(m["username"] for m in selectors.room_members(room=room)) == ["amy", "ben"]
        with pytest.raises(ValidationError):
            dm_open(user=amy, other=amy)

    def test_a_direct_message_notifies_the_other_person_when_they_are_not_in_the_room(self):
        amy, ben = make_user("amy"), make_user("ben")
        room, _ = dm_open(user=amy, other=ben)
        message = message_create(room=room, user=amy, content="psst")
        [notification] = Notification.objects.filter(kind="dm")
        assert notification.user == ben
        assert notification.data == {"room": room.slug, "from": "amy", "message_id": message.pk, "content": "psst"}

    def test_someone_removed_from_a_direct_message_is_not_notified_of_later_messages(self):
        amy, ben, staff = make_user("amy"), make_user("ben"), make_user("mod", staff=True)
        room, _ = dm_open(user=amy, other=ben)
        message_create(room=room, user=amy, content="before")
        member_remove(room=room, user=ben, removed_by=staff)
        message_create(room=room, user=amy, content="after @ben")
        assert [n.data["content"] for n in Notification.objects.filter(user=ben)] == ["before"]
        # Leaving is a removal too.
        cat, dan = make_user("cat"), make_user("dan")
        other, _ = dm_open(user=cat, other=dan)
        member_remove(room=other, user=dan, removed_by=dan)
        message_create(room=other, user=cat, content="anyone?")
        assert not Notification.objects.filter(user=dan).exists()


@pytest.mark.django_db(transaction=True)
def test_two_first_requests_at_once_create_one_direct_message_room():
    amy, ben = make_user("amy"), make_user("ben")
    barrier = threading.Barrier(2)
    results = []

    def open_dm(user, other):
        barrier.wait(5)
        try:
            results.append(dm_open(user=user, other=other))
        finally:
            connection.close()

    threads = [threading.Thread(target=open_dm, args=pair) for pair in ((amy, ben), (ben, amy))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 2
    assert results[0][0] == results[1][0] and sorted(created for _, created in results) == [False, True]
    assert Room.objects.filter(direct_key__isnull=False).count() == 1
    assert RoomMember.objects.count() == 2


@pytest.mark.django_db
class TestApi:
    def test_create_a_private_room_and_manage_members(self):
        owner, bob = make_user("owner"), make_user("bob")
        client = api(owner)
        response = post(client, "/api/rooms/", {"slug": "club", "title": "Club", "private": True})
        assert response.status_code == 201 and response.json()["private"] is True
        assert post(client, "/api/rooms/club/members", {"user": "bob"}).status_code == 201
        assert client.get("/api/rooms/club/members").json() == {
            "members": [{"username": "owner", "role": "owner"}, {"username": "bob", "role": "member"}]
        }
        assert post(client, "/api/rooms/club/members", {"user": "nobody"}).status_code == 400
        assert api(bob).delete("/api/rooms/club/members/bob").status_code == 204
        assert [m["username"] for m in client.get("/api/rooms/club/members").json()["members"]] == ["owner"]

    def test_outsiders_get_404_everywhere_and_members_403_for_removing_others(self):
        owner, bob, eve, outsider = (make_user(n) for n in ("owner", "bob", "eve", "outsider"))
        room = room_create(slug="club", title="Club", created_by=owner, private=True)
        for user in (bob, eve):
            member_add(room=room, user=user, added_by=owner)
        stranger = api(outsider)
        assert "club" not in [r["slug"] for r in stranger.get("/api/rooms/").json()["rooms"]]
        for response in (
            stranger.get("/api/rooms/club/messages"),
            post(stranger, "/api/rooms/club/messages", {"content": "hi"}),
            stranger.get("/api/rooms/club/members"),
            post(stranger, "/api/rooms/club/members", {"user": "outsider"}),
            stranger.delete("/api/rooms/club/members/bob"),
        ):
            assert response.status_code == 404, response.content
        assert api(bob).delete("/api/rooms/club/members/eve").status_code == 403
        staff = api(make_user("mod", staff=True))
        assert staff.get("/api/rooms/club/messages").status_code == 200, "staff may read it over REST"

    def test_member_room_list_shows_private_rooms_with_unread_counts(self):
        owner, bob = make_user("owner"), make_user("bob")
        room = room_create(slug="club", title="Club", created_by=owner, private=True)
        member_add(room=room, user=bob, added_by=owner)
        message_create(room=room, user=owner, content="hello")
        rooms = {r["slug"]: r for r in api(bob).get("/api/rooms/").json()["rooms"]}
        assert rooms["club"]["private"] is True and rooms["club"]["unread"] == 1 and rooms["club"]["direct"] is False

    def test_dms_endpoint(self):
        amy, ben = make_user("amy"), make_user("ben")
        first = post(api(amy), "/api/dms/", {"user": "ben"})
        second = post(api(ben), "/api/dms/", {"user": "amy"})
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["slug"] == second.json()["slug"] and first.json()["slug"].startswith("dm-")
        assert first.json()["private"] is True and first.json()["direct"] is True
        assert post(api(amy), "/api/dms/", {"user": "amy"}).status_code == 400
        assert post(api(amy), "/api/dms/", {"user": "nobody"}).status_code == 400
        assert post(api(amy), "/api/dms/", {}).status_code == 400


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_outsiders_sockets_close_4004_and_members_get_in():
    def setup():
        owner, outsider = make_user("owner"), make_user("outsider", staff=True)
        room_create(slug="club", title="Club", created_by=owner, private=True)
        return make_token(owner), make_token(outsider)

    owner_token, outsider_token = await database_sync_to_async(setup)()
    outsider = WebsocketCommunicator(
        application, "/ws/rooms/club/", headers=[(b"authorization", f"Bearer {outsider_token}".encode())]
    )
    assert (await outsider.connect(timeout=5))[0]
    assert (await outsider.receive_output(timeout=5))["code"] == 4004, "not 4003: the room's existence does not leak"
    member = WebsocketCommunicator(application, "/ws/rooms/club/", headers=[(b"authorization", f"Bearer {owner_token}".encode())])
    await member.connect(timeout=5)
    assert (await member.receive_json_from(timeout=5))["type"] == "hello"
    await member.disconnect()
    from chat.hub import get_hub
    from chat.writer import get_writer

    await get_hub().close()
    await get_writer().close()
