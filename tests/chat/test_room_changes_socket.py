"""The room socket's changes (docs/protocol.md, "Room changes"): edit, delete, react and
read frames, replies, ``last_seq`` resumes and every refusal, through the whole ASGI stack
with WebsocketCommunicator."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from chat.models import Message, Room
from chat.services.moderation import message_restore, mute_create, room_lock
from config.asgi import application
from tests.support.factories import make_messages, make_room, make_token, make_user

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_hub")]
TIMEOUT = 5
THUMBS = "\U0001f44d"


@pytest.fixture
def tokens(transactional_db):
    make_room()
    return {name: make_token(make_user(name, staff=name == "mod")) for name in ("alice", "bob", "mod")}


async def joined(token: str, query: str = "") -> tuple[WebsocketCommunicator, list[dict]]:
    socket = WebsocketCommunicator(
        application, f"/ws/rooms/lobby/{query}", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    frames = [await socket.receive_json_from(timeout=TIMEOUT)]
    while frames[-1]["type"] != "presence":
        frames.append(await socket.receive_json_from(timeout=TIMEOUT))
    return socket, frames


async def next_of(socket: WebsocketCommunicator, kind: str) -> dict:
    """The next frame of this type; frames of other types in between are skipped (others
    joining, the room's other traffic), but never an error when something else is expected."""
    while True:
        frame = await socket.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == kind:
            return frame
        assert frame["type"] != "error", f"expected {kind}, got {frame}"


async def say(socket: WebsocketCommunicator, content: str, **extra) -> dict:
    await socket.send_json_to({"type": "message", "content": content, "nonce": content, **extra})
    return await next_of(socket, "message")


async def test_edit_delete_react_reach_everyone_with_the_next_seqs(tokens):
    alice, _ = await joined(tokens["alice"])
    bob, _ = await joined(tokens["bob"])
    sent = await say(alice, "helo")
    assert sent["seq"] == 1 and sent["reply_to"] is None and sent["edited_at"] is None and sent["reactions"] == {}
    assert (await next_of(bob, "message"))["id"] == sent["id"]
    await alice.send_json_to({"type": "edit", "id": sent["id"], "content": "hello"})
    for socket in (alice, bob):
        edited = await next_of(socket, "message_edited")
        assert (edited["id"], edited["content"], edited["seq"]) == (sent["id"], "hello", 2) and edited["edited_at"]
    await bob.send_json_to({"type": "react", "id": sent["id"], "emoji": THUMBS, "on": True})
    for socket in (alice, bob):
        assert await next_of(socket, "reactions") == {
            "type": "reactions",
            "id": sent["id"],
            "reactions": {THUMBS: ["bob"]},
            "seq": 3,
        }
    reply = await say(bob, "indeed", reply_to=sent["id"])
    assert reply["reply_to"] == sent["id"] and reply["seq"] == 4
    await alice.send_json_to({"type": "delete", "id": sent["id"]})
    for socket in (alice, bob):
        assert await next_of(socket, "message_deleted") == {"type": "message_deleted", "id": sent["id"], "seq": 5}
    assert await alice.receive_nothing(0.2) and await bob.receive_nothing(0.2), (
        "the sender's change is answered by the broadcast only"
    )
    await alice.disconnect()
    await bob.disconnect()


async def test_a_client_resuming_with_last_seq_gets_each_change_it_missed_once(tokens):
    alice, _ = await joined(tokens["alice"])
    kept, edited, removed = [await say(alice, text) for text in ("kept", "edited", "removed")]
    mod, _ = await joined(tokens["mod"])
    away, frames = await joined(tokens["bob"], f"?last_seq={removed['seq']}")
    assert frames[-2] == {"type": "synced", "last_id": 0, "seq": 3}
    await away.disconnect()
    # One after the other (frames from two sockets are not ordered with each other).
    for socket, frame, kind in [
        (alice, {"type": "edit", "id": edited["id"], "content": "edited twice?"}, "message_edited"),
        (alice, {"type": "edit", "id": edited["id"], "content": "edited twice"}, "message_edited"),
        (mod, {"type": "delete", "id": removed["id"]}, "message_deleted"),
        (mod, {"type": "react", "id": kept["id"], "emoji": THUMBS}, "reactions"),
    ]:
        await socket.send_json_to(frame)
        await next_of(alice, kind)
    new = await say(alice, "while you were away")
    assert new["seq"] == 8
    back, frames = await joined(tokens["bob"], "?last_seq=3")
    types = [(f["type"], f.get("id"), f.get("seq")) for f in frames[1:-1]]
    assert types == [
        ("message_edited", edited["id"], 5),
        ("message_deleted", removed["id"], 6),
        ("reactions", kept["id"], 7),
        ("message", new["id"], 8),
        ("synced", None, 8),
    ]
    assert frames[1]["content"] == "edited twice" and frames[-2]["last_id"] == new["id"]
    await alice.send_json_to({"type": "edit", "id": new["id"], "content": "live again"})
    assert (await next_of(back, "message_edited"))["seq"] == 9
    assert await back.receive_nothing(0.3), "nothing twice"
    for socket in (alice, mod, back):
        await socket.disconnect()


async def test_a_restoration_reaches_clients_online_and_resuming(tokens):
    alice, _ = await joined(tokens["alice"])
    sent = await say(alice, "back soon")
    await alice.send_json_to({"type": "delete", "id": sent["id"]})
    await next_of(alice, "message_deleted")
    message = await Message.objects.aget(pk=sent["id"])
    mod = await User.objects.aget(username="mod")
    await database_sync_to_async(message_restore)(message=message, restored_by=mod)
    restored = await next_of(alice, "message_restored")
    assert restored == {**sent, "type": "message_restored", "seq": 3}
    late, frames = await joined(tokens["bob"], "?last_seq=1")
    assert [f["type"] for f in frames[1:-1]] == ["message_restored", "synced"]
    await alice.disconnect()
    await late.disconnect()


async def test_a_gap_past_a_thousand_changes(tokens):
    room = await Room.objects.aget(slug="lobby")
    await database_sync_to_async(lambda: make_messages(room, User.objects.get(username="bob"), 1002))()
    socket, frames = await joined(tokens["alice"], "?last_seq=1")
    assert [f["type"] for f in frames] == ["hello", "gap", "synced", "presence"]
    assert frames[1] == {"type": "gap", "missed": 1001} and frames[2] == {"type": "synced", "last_id": 0, "seq": 1002}
    await socket.disconnect()
    socket, frames = await joined(tokens["alice"], "?last_seq=2")
    assert len(frames) == 1000 + 3 and frames[-2]["seq"] == 1002
    await socket.disconnect()


async def test_a_last_id_resume_says_the_rooms_seq(tokens):
    alice, _ = await joined(tokens["alice"])
    first = await say(alice, "one")
    await alice.send_json_to({"type": "edit", "id": first["id"], "content": "one!"})
    await next_of(alice, "message_edited")
    socket, frames = await joined(tokens["bob"], "?last_id=0")
    assert [f["type"] for f in frames] == ["hello", "message", "synced", "presence"]
    assert frames[1]["content"] == "one!" and frames[1]["seq"] == 1 and frames[1]["edited_at"]
    assert frames[2] == {"type": "synced", "last_id": first["id"], "seq": 2}
    await alice.disconnect()
    await socket.disconnect()


async def test_a_read_marker_reaches_the_readers_other_sockets_only(tokens):
    phone, _ = await joined(tokens["alice"])
    laptop, _ = await joined(tokens["alice"])
    bob, _ = await joined(tokens["bob"])
    sent = await say(bob, "read me")
    for socket in (phone, laptop):
        await next_of(socket, "message")
    await phone.send_json_to({"type": "read", "id": sent["id"]})
    assert await next_of(laptop, "read") == {"type": "read", "user": "alice", "id": sent["id"]}
    await phone.send_json_to({"type": "read", "id": sent["id"]})  # not forward: ignored
    await phone.send_json_to({"type": "ping"})
    assert await phone.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}, "no read frame back to the sender"
    assert await laptop.receive_nothing(0.3) and await bob.receive_nothing(0.3)
    for socket in (phone, laptop, bob):
        await socket.disconnect()


BAD_CHANGES: list[tuple[dict[str, object], str]] = [
    ({"type": "edit", "id": 999999, "content": "x"}, "not_found"),
    ({"type": "edit", "id": "{theirs}", "content": "mine now"}, "forbidden"),
    ({"type": "edit", "id": "{old}", "content": "too late"}, "edit_window_passed"),
    ({"type": "edit", "id": "{removed}", "content": "x"}, "not_found"),
    ({"type": "edit", "id": "{mine}", "content": "x" * 4001}, "too_long"),
    ({"type": "edit", "id": "{mine}", "content": " "}, "empty"),
    ({"type": "edit", "id": True, "content": "x"}, "bad_frame"),
    ({"type": "edit", "id": "{mine}"}, "bad_frame"),
    ({"type": "delete", "id": "{theirs}"}, "forbidden"),
    ({"type": "delete", "id": -3}, "bad_frame"),
    ({"type": "react", "id": "{theirs}", "emoji": "\U0001f4a9"}, "bad_emoji"),
    ({"type": "react", "id": "{theirs}", "emoji": THUMBS, "on": "yes"}, "bad_frame"),
    ({"type": "react", "id": "{removed}", "emoji": THUMBS}, "not_found"),
    ({"type": "read", "id": "{elsewhere}"}, "not_found"),
    ({"type": "read", "id": 999999}, "not_found"),
    ({"type": "message", "content": "re", "reply_to": "{elsewhere}"}, "not_found"),
    ({"type": "message", "content": "re", "reply_to": "{removed}"}, "not_found"),
    ({"type": "message", "content": "re", "reply_to": "seven"}, "bad_frame"),
]


@pytest.mark.parametrize(
    ("frame", "code"), BAD_CHANGES, ids=[f"{frame['type']}-{code}-{i}" for i, (frame, code) in enumerate(BAD_CHANGES)]
)
async def test_bad_changes_get_their_code_and_nonce_and_the_socket_stays_usable(tokens, frame, code):
    def world() -> dict[str, int]:
        room, other = Room.objects.get(slug="lobby"), make_room("other")
        alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
        mine, theirs, old, removed = (
            make_messages(room, alice, 1)[-1],
            make_messages(room, bob, 1)[-1],
            *make_messages(room, alice, 2)[-2:],
        )
        Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
        Message.objects.filter(pk=removed.pk).update(removed_at=timezone.now())
        elsewhere = make_messages(other, alice, 1)[0]
        return {"mine": mine.pk, "theirs": theirs.pk, "old": old.pk, "removed": removed.pk, "elsewhere": elsewhere.pk}

    ids = await database_sync_to_async(world)()
    filled = {
        key: (ids[value[1:-1]] if isinstance(value, str) and value.startswith("{") else value) for key, value in frame.items()
    }
    socket, _ = await joined(tokens["alice"])
    await socket.send_json_to({**filled, "nonce": "n-1"})
    error = await next_of(socket, "error")
    assert (error["code"], error["nonce"]) == (code, "n-1") and error["detail"], error
    await socket.send_json_to({"type": "edit", "id": ids["mine"], "content": "still fine"})
    assert (await next_of(socket, "message_edited"))["content"] == "still fine"
    await socket.disconnect()


async def test_an_unechoable_nonce_on_a_change_is_bad_frame(tokens):
    socket, _ = await joined(tokens["alice"])
    await socket.send_json_to({"type": "read", "id": 1, "nonce": "x" * 65})
    error = await next_of(socket, "error")
    assert (error["code"], error["nonce"]) == ("bad_frame", None)
    await socket.disconnect()


async def test_muted_users_and_locked_rooms_refuse_edits_and_reactions(tokens):
    alice, _ = await joined(tokens["alice"])
    sent = await say(alice, "mine")
    user, mod, room = (
        await User.objects.aget(username="alice"),
        await User.objects.aget(username="mod"),
        await Room.objects.aget(slug="lobby"),
    )
    await database_sync_to_async(room_lock)(room=room, locked=True, locked_by=mod)
    await next_of(alice, "room_locked")
    for frame in ({"type": "edit", "id": sent["id"], "content": "x"}, {"type": "react", "id": sent["id"], "emoji": THUMBS}):
        await alice.send_json_to({**frame, "nonce": "locked"})
        assert (await next_of(alice, "error"))["code"] == "room_locked"
    await alice.send_json_to({"type": "delete", "id": sent["id"]})
    assert (await next_of(alice, "error"))["code"] == "room_locked", "an author cannot delete in a locked room"
    await database_sync_to_async(room_lock)(room=room, locked=False, locked_by=mod)
    await database_sync_to_async(mute_create)(user=user, room=room, minutes=5)
    for frame in ({"type": "edit", "id": sent["id"], "content": "x"}, {"type": "react", "id": sent["id"], "emoji": THUMBS}):
        await alice.send_json_to(frame)
        assert (await next_of(alice, "error"))["code"] == "muted"
    await alice.disconnect()


@override_settings(CHAT_RATE_LIMIT=2, CHAT_RATE_WINDOW=30)
async def test_edits_and_reactions_count_against_the_rate_limit(tokens):
    alice, _ = await joined(tokens["alice"])
    sent = await say(alice, "one")
    await alice.send_json_to({"type": "react", "id": sent["id"], "emoji": THUMBS})
    await next_of(alice, "reactions")
    await alice.send_json_to({"type": "edit", "id": sent["id"], "content": "two", "nonce": "e"})
    error = await next_of(alice, "error")
    assert (error["code"], error["nonce"]) == ("rate_limited", "e") and error["retry_after"] > 0
    await alice.disconnect()
