"""Who is online in each room, counted across workers.

Each open connection is a member ``"<username>\\t<connection key>"`` of a sorted set
per room scored with the time it was last refreshed (how many connections each user
has is counted the same way, in accounts.connections).
Every worker refreshes its own connections once a heartbeat; a member older than
three heartbeats belongs to a worker that died, and the next prune removes it. So a
SIGKILLed worker leaves no ghosts after three heartbeats, with nobody cleaning up.
The sets live in Redis (the in-process one without REDIS_URL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from accounts.connections import key_ttl_seconds, stale_after_seconds
from core.redis_clients import async_redis, async_redis_at, group_by_shard, sync_redis_at

# Both keys carry the room as a hash tag: one slot in a Redis Cluster, for the one script.
ROOM_KEY = "chat:presence:{{room:{room_id}}}"
ROOM_VERSION_KEY = "chat:presence:{{room:{room_id}}}:version"

_ROOM_SCRIPT = """
local before = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if ARGV[3] == 'add' then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
elseif ARGV[3] == 'remove' then
  redis.call('ZREM', KEYS[1], ARGV[4])
end
local after = redis.call('ZRANGE', KEYS[1], 0, -1)
local version = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {version, before, after}
"""


def member_name(username: str, connection_key: str) -> str:
    return f"{username}\t{connection_key}"


def usernames(members: list[str]) -> list[str]:
    return sorted({member.split("\t", 1)[0] for member in members})


@dataclass(frozen=True, slots=True)
class PresenceChange:
    version: int
    users_before: list[str]
    users_after: list[str]

    @property
    def changed(self) -> bool:
        return self.users_before != self.users_after


async def _room_op(room_id: int, op: str, member: str = "") -> PresenceChange:
    now = time.time()
    stale = now - stale_after_seconds()
    keys = [ROOM_KEY.format(room_id=room_id), ROOM_VERSION_KEY.format(room_id=room_id)]
    version, before, after = await async_redis(keys[0]).eval(_ROOM_SCRIPT, 2, *keys, now, stale, op, member, key_ttl_seconds())
    return PresenceChange(int(version), usernames(before), usernames(after))


async def room_enter(*, room_id: int, member: str) -> PresenceChange:
    return await _room_op(room_id, "add", member)


async def room_leave(*, room_id: int, member: str) -> PresenceChange:
    return await _room_op(room_id, "remove", member)


async def room_prune(*, room_id: int) -> PresenceChange:
    """Drop members of dead workers; the change says whether anyone visibly left."""
    return await _room_op(room_id, "prune")


async def refresh(*, rooms: dict[int, list[str]]) -> None:
    """Mark this worker's connections alive in their rooms (called once a heartbeat)."""
    now = time.time()
    ttl = key_ttl_seconds()
    entries = [(ROOM_KEY.format(room_id=room_id), members) for room_id, members in rooms.items() if members]
    for shard, positions in group_by_shard(key for key, _ in entries).items():
        pipe = async_redis_at(shard).pipeline(transaction=False)
        for position in positions:
            key, members = entries[position]
            pipe.zadd(key, dict.fromkeys(members, now))
            pipe.expire(key, ttl)
        await pipe.execute()


def room_online_usernames(room_ids: list[int]) -> dict[int, set[str]]:
    """Who is online per room (synchronous), from live presence entries."""
    stale = time.time() - stale_after_seconds()
    if not room_ids:
        return {}
    return {room_id: set(usernames(members)) for room_id, members in _room_members(room_ids, stale).items()}


def room_online_counts(room_ids: list[int]) -> dict[int, int]:
    """Distinct users online per room, for REST listings (synchronous)."""
    stale = time.time() - stale_after_seconds()
    return {room_id: len(usernames(members)) for room_id, members in _room_members(room_ids, stale).items()}


def _room_members(room_ids: list[int], stale: float) -> dict[int, list[str]]:
    """Live presence members per room, one pipeline per Redis shard."""
    keys = [ROOM_KEY.format(room_id=room_id) for room_id in room_ids]
    members: dict[int, list[str]] = {}
    for shard, positions in group_by_shard(keys).items():
        pipe = sync_redis_at(shard).pipeline(transaction=False)
        for position in positions:
            pipe.zrangebyscore(keys[position], stale, "+inf")
        for position, result in zip(positions, pipe.execute(), strict=True):
            members[room_ids[position]] = result
    return {room_id: members[room_id] for room_id in room_ids}
