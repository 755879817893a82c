"""The process's Redis clients, created on first use when Redis is configured.

Redis is one server (``REDIS_URL``), several shards (``REDIS_URLS``), masters found
through Sentinel (``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTERS``, one shard per
master), or a Redis Cluster (``REDIS_CLUSTER_URL``). With shards the sharding is
client-side: every key, stream and pub/sub topic lives on the shard its *shard key*
hashes to (``shard_for``), the way channels_redis spreads its channels. Callers pass the
shard key; keys that a Lua script or pipeline touches together share one (a room's
presence keys, a stream's log and meta).

A Redis Cluster is one "shard" to this module: its client (redis-py's ``RedisCluster``)
routes each command to the node that owns the key's hash slot and follows MOVED, ASK
and failovers itself. What must live together in one slot (a script's or a
transaction's keys) carries the shard key as a hash tag (``hash_tag``): Redis hashes
only the part in braces. Pub/sub is sharded (SPUBLISH/SSUBSCRIBE, core.broker).

One pooled synchronous client per shard serves threads (services run in Django's sync
world); one asyncio client per shard per event loop serves consumers and async views.

Without Redis (``make run``, most tests) the same clients talk to one in-process server,
a ``fakeredis.FakeServer`` shared by every thread and event loop of the process: every
caller runs the Redis code it runs in production (scripts, pipelines, streams, expiry),
on one shard. ``reset_in_process`` empties it between tests. docs/architecture.md,
"Without Redis", says what still has an in-process stand-in of its own, and why.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import fakeredis
import redis
import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.crc
import redis.exceptions
import redis.retry
import redis.sentinel
from django.conf import settings
from fakeredis._core._database import Database
from redis.backoff import ExponentialBackoff

# Keyed by the shard's address as well as its index, so that tests pointing REDIS_SHARDS
# elsewhere (override_settings) get clients of their own.
_sync_clients: dict[tuple[int, str], redis.Redis] = {}
_sync_lock = threading.Lock()
_ShardClients = dict[tuple[int, str], redis.asyncio.Redis]
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ShardClients] = weakref.WeakKeyDictionary()

# Short enough that a dead Redis is noticed quickly, long enough for a busy one.
CONNECT_TIMEOUT_SECONDS = 2.0
# redis-py's pools stop at 100 connections by default. Every stream reader holds one for
# its blocking XREAD, so a worker with a few hundred open streams needs more; Redis itself
# accepts 10,000 clients by default. Beyond this, a command waits for a connection
# (_WaitingConnectionPool) rather than failing.
MAX_CONNECTIONS = 4096
# A restarted Redis leaves every pooled connection dead, and redis-py's from_url retries
# nothing: each command would fail once per stale connection (a token stream or a task
# ended by an error). Commands retry connection errors on a fresh connection with
# back-off (0.05 s doubling to 0.5 s, about 1.7 s in all), riding out a restart.
# Time-outs are not retried: a stalled Redis already had REDIS_SOCKET_TIMEOUT.
COMMAND_RETRIES = 5
# A Redis Cluster fails a master over to its replica after cluster-node-timeout (15 s by
# default, 1 s in our tests) and an election (about a second more: 2.4 s measured with
# a 1 s timeout). The cluster client refreshes its slot map and retries connection
# errors, MOVED and CLUSTERDOWN; 0.05 s doubling to 1 s over 12 attempts is about 8.5 s,
# which rides out such a failover with a node timeout of up to about 5 s. Longer ones
# fail the command (a token stream ends with an error; chat backfills).
CLUSTER_COMMAND_RETRIES = 12


def redis_configured() -> bool:
    """Whether Redis servers are configured (else one in-process server stands in)."""
    return bool(settings.REDIS_SHARDS)


def redis_cluster_mode() -> bool:
    """Whether Redis is a Redis Cluster (``REDIS_CLUSTER_URL``)."""
    return len(settings.REDIS_SHARDS) == 1 and "cluster" in settings.REDIS_SHARDS[0]


def hash_tag(shard_key: str) -> str:
    """``{shard_key}``: in a Redis Cluster, keys whose names carry the same tag share a
    hash slot (Redis hashes only what is between the first braces), so one script or
    transaction may touch them all. Harmless elsewhere; every mode uses the same names."""
    return "{" + shard_key + "}"


def shard_count() -> int:
    return len(settings.REDIS_SHARDS) or 1  # the in-process server is one shard


def shard_for(shard_key: str) -> int:
    """The shard a key lives on: CRC32 modulo the number of shards.

    The mapping changes when the list of shards does; docs/deployment.md says what that
    costs (streams and presence in flight move, pub/sub subscribers re-subscribe)."""
    count = len(settings.REDIS_SHARDS)
    if count <= 1:
        return 0
    return binascii.crc32(shard_key.encode()) % count


def group_by_shard(shard_keys: Iterable[str]) -> dict[int, list[int]]:
    """Positions of ``shard_keys`` grouped by shard, in order: for pipelines that span keys
    (one pipeline per shard instead of one round trip per key; a Redis Cluster's pipeline
    splits itself by node)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for position, key in enumerate(shard_keys):
        groups[shard_for(key)].append(position)
    return dict(groups)


def group_for_scripts(keys: Iterable[str]) -> list[tuple[int, list[int]]]:
    """Positions of ``keys`` (full key names) grouped so that one Lua script call may take
    each group's keys: by shard, and in a Redis Cluster by hash slot (a script's keys must
    share one). Pairs of (shard index, positions)."""
    keys = list(keys)
    if not redis_cluster_mode():
        return list(group_by_shard(keys).items())
    slots: dict[int, list[int]] = defaultdict(list)
    for position, key in enumerate(keys):
        slots[redis.crc.key_slot(key.encode())].append(position)
    return [(0, positions) for positions in slots.values()]


# ---- cancellation ---------------------------------------------------------------------------
# On Python 3.11 asyncio.wait_for returns the inner result, and drops the cancellation, when
# a task is cancelled just as what it waits for finishes (CPython gh-86296, fixed in 3.12).
# redis-py writes every command through wait_for when a socket timeout is set (ours do so only
# when a write must wait for Redis: _DirectWrites), so a cancel that landed during a command's
# write was lost: the task ran on (a stopped generation kept writing its tokens for seconds).
# The task still counts the cancel (Task.cancelling()), so a command that returns with more
# counted than it started with delivers it on return: the command completed, its reply was
# read, and the task stops as if cancelled just after.
async def _deliver_lost_cancel(command: Any) -> Any:
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    result = await command
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError
    return result


class _AsyncPipeline(redis.asyncio.client.Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await _deliver_lost_cancel(super().execute(raise_on_error))


class _DirectWrites(redis.asyncio.connection.AbstractConnection):
    """A command written straight into the socket's transport when nothing needs waiting for.

    redis-py writes each command through ``asyncio.wait_for(..., socket_timeout)``, which
    on Python 3.11 wraps the write in a task of its own: a task, a future and a timer per
    command, and the caller suspended for two turns of the event loop, although the write
    almost never waits (the transport buffers it). Measured with redis-py 8.2 against a
    local redis-server, a SET took 226 µs of CPU through redis-py's connection and 189 µs
    through this one (docs/performance.md, "Redis commands without wait_for"). When the
    connection is not open yet, a health check is due, or the transport's buffer is past
    its high-water mark (Redis not reading), redis-py's own path runs: its connect, its
    PING, and its time-out and error handling for a write that must wait."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = self._writer
        if (
            writer is None
            or self._reader is None
            or writer.transport.is_closing()
            or (check_health and self.health_check_interval and asyncio.get_running_loop().time() > self.next_health_check)
        ):
            await super().send_packed_command(command, check_health)
            return
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer.writelines(command)
        transport = writer.transport
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            # Redis is not reading: wait for the buffer to drain, with redis-py's time-out.
            await super().send_packed_command([], check_health=False)


class _DirectWriteConnection(_DirectWrites, redis.asyncio.Connection):
    pass


class _DirectWriteSSLConnection(_DirectWrites, redis.asyncio.SSLConnection):
    pass


class _DirectWriteUnixConnection(_DirectWrites, redis.asyncio.UnixDomainSocketConnection):
    pass


# The class redis-py picks for a URL's scheme (redis://, rediss://, unix://) -> ours.
_DIRECT_WRITE_CLASSES: dict[type, type] = {
    redis.asyncio.Connection: _DirectWriteConnection,
    redis.asyncio.SSLConnection: _DirectWriteSSLConnection,
    redis.asyncio.UnixDomainSocketConnection: _DirectWriteUnixConnection,
}


class _WaitingConnectionPool(redis.asyncio.ConnectionPool):
    """redis-py's pool, which waits (up to the command time-out) for a connection when all
    MAX_CONNECTIONS are in use, where redis-py's raises MaxConnectionsError at once, and
    whose connections write directly (_DirectWrites).

    When thousands of sockets close together, each one's clean-up (presence, the user's
    connection count) takes a connection at the same moment: redis-py's pool failed part
    of them (docs/performance.md, "Idle connections"). Waiters are woken one per release,
    in turn. Unlike redis-py's BlockingConnectionPool, which takes a lock and a condition
    on every checkout, this costs nothing until the pool is full."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        connection_class = kwargs.get("connection_class", redis.asyncio.Connection)
        kwargs["connection_class"] = _DIRECT_WRITE_CLASSES.get(connection_class, connection_class)
        super().__init__(*args, **kwargs)
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.REDIS_SOCKET_TIMEOUT
        while True:
            try:
                return await super().get_connection(*args, **kwargs)
            except redis.exceptions.MaxConnectionsError:
                if loop.time() >= deadline:
                    raise
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                pass  # one last try, then MaxConnectionsError
            finally:
                if not waiter.done():
                    self._waiters.remove(waiter)

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break


class _AsyncRedis(redis.asyncio.Redis):
    """redis-py's asyncio client, delivering the cancels Python 3.11 loses (see above),
    on a pool that waits for a free connection (_WaitingConnectionPool)."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> _AsyncRedis:  # type: ignore[override]  # no single_connection_client
        client = cls(connection_pool=_WaitingConnectionPool.from_url(url, **kwargs))
        client.auto_close_connection_pool = True  # as redis-py's from_url: closing the client closes its pool
        return client

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _deliver_lost_cancel(super().execute_command(*args, **options))

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> _AsyncPipeline:
        return _AsyncPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class _AsyncClusterPipeline(redis.asyncio.cluster.ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        return await _deliver_lost_cancel(super().execute(raise_on_error, allow_redirections))


class _AsyncRedisCluster(redis.asyncio.cluster.RedisCluster):
    """redis-py's asyncio cluster client, finding XREAD's keys itself, and delivering the
    cancels Python 3.11 loses (see above).

    XREAD's keys follow a STREAMS keyword, which redis-py's key-spec reader does not
    handle, so it asks a node (COMMAND GETKEYS) before every XREAD: a round trip per
    read, and always the same node, which after a failover may be the dead master, so
    that every XREAD fails until some other command fails on that node too (seen in
    tests/multiworker/test_redis_cluster.py). The keys are the first half of what follows
    STREAMS."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() == "XREAD":
            words = [arg.upper() if isinstance(arg, (str, bytes)) else arg for arg in args]
            keyword = next((position for position, word in enumerate(words) if word in ("STREAMS", b"STREAMS")), None)
            if keyword is not None:
                rest = args[keyword + 1 :]
                slots = {self.keyslot(key) for key in rest[: len(rest) // 2]}
                if len(slots) == 1:
                    return slots.pop()
        return await super()._determine_slot(command, *args)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await _deliver_lost_cancel(super().execute_command(*args, **kwargs))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> _AsyncClusterPipeline:
        if shard_hint:
            raise redis.exceptions.RedisClusterException("shard_hint is deprecated in cluster mode")
        return _AsyncClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py builds its own


def _client_options(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "decode_responses": True,
        "max_connections": MAX_CONNECTIONS,
    }
    options.update(overrides)
    return options


def _sentinel_options(shard: dict[str, Any]) -> dict[str, Any]:
    """Options for the connections to the master a Sentinel names."""
    return {"db": shard["db"], "password": shard["password"]}


def _sentinel_connection(shard: dict[str, Any]) -> dict[str, Any]:
    """Options for the connections to the Sentinels themselves (asked which server is the
    master whenever a connection to it is opened)."""
    return {
        "socket_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "password": shard["sentinel_password"],
    }


def _open_client(index: int, client_class: Any, sentinel_class: Any, cluster_class: Any, **overrides: Any) -> Any:
    """A client of shard ``index``: redis-py's synchronous or asyncio classes, which take
    the same arguments."""
    shard = settings.REDIS_SHARDS[index]
    if "cluster" in shard:
        node_class = (
            redis.asyncio.cluster.ClusterNode
            if issubclass(cluster_class, redis.asyncio.cluster.RedisCluster)
            else redis.cluster.ClusterNode
        )
        seeds = [node_class(host, port) for host, port in [*shard["seeds"][1:], *_known_cluster_nodes()]]
        return cluster_class.from_url(shard["cluster"], startup_nodes=seeds, **_client_options(**overrides))
    if "url" in shard:
        return client_class.from_url(shard["url"], **_client_options(**overrides))
    sentinel = sentinel_class(shard["sentinels"], sentinel_kwargs=_sentinel_connection(shard))
    options = _client_options(**_sentinel_options(shard), **overrides)
    return sentinel.master_for(shard["master"], redis_class=client_class, **options)


def _known_cluster_nodes() -> set[tuple[str, int]]:
    """The nodes the process's open cluster clients know: a new client (a new event
    loop's) finds the cluster through them when the nodes named in the settings are down."""
    clients: list[Any] = [*_sync_clients.values()]
    for loop_clients in list(_async_clients.values()):
        clients += loop_clients.values()
    return {
        (node.host, int(node.port))
        for client in clients
        if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))
        for node in client.get_nodes()
    }


def _command_retry(retry_class: Any) -> Any:
    if redis_cluster_mode():
        return retry_class(ExponentialBackoff(cap=1.0, base=0.05), CLUSTER_COMMAND_RETRIES, (redis.ConnectionError,))
    return retry_class(ExponentialBackoff(cap=0.5, base=0.05), COMMAND_RETRIES, (redis.ConnectionError,))


# ---- without Redis: one in-process server ---------------------------------------------------
# The version of the redis-server the tests run against (tests/support/processes.py):
# commands and script behaviour newer than that are not ours to rely on.
IN_PROCESS_VERSION = (7, 0)
_in_process_server: fakeredis.FakeServer | None = None
_IN_PROCESS_KEY = (0, "in-process")
_server_lock = threading.Lock()


class _Database(Database):
    """A database of the in-process server that outlives event loops. A command blocked
    on it (XREAD BLOCK) leaves a wake-up for its loop, taken back when the command
    returns; if the loop closed first (a test's, with a reader still waiting), fakeredis
    would raise "Event loop is closed" on every later write. Such a wake-up is dropped."""

    def wake_all(self) -> None:
        self.condition.notify_all()
        for callback in list(self._change_callbacks):
            try:
                callback()
            except RuntimeError:  # its event loop is closed: nobody is left to wake
                self._change_callbacks.discard(callback)

    def remove_change_callback(self, callback: Callable[[], None]) -> None:
        self._change_callbacks.discard(callback)  # perhaps dropped above already


def _fake_server() -> fakeredis.FakeServer:
    global _in_process_server
    if _in_process_server is None:
        with _server_lock:
            if _in_process_server is None:
                server = fakeredis.FakeServer(version=IN_PROCESS_VERSION)
                server.dbs = defaultdict(lambda: _Database(server.lock))
                _in_process_server = server
    return _in_process_server


# The in-process server's sockets of each event loop. fakeredis never closes a socket when
# its connection disconnects, and the server holds on to every open one (and through it,
# its loop): closed here, on disconnect and once their loop has closed (tests make a loop
# per test, and async_to_sync one per call).
_fake_sockets: list[tuple[asyncio.AbstractEventLoop, Any]] = []


def _close_fake_socket(sock: Any) -> None:
    if sock._server is not None:  # not closed yet
        sock.close()


class _FakeAsyncConnection(fakeredis.FakeAsyncRedisConnection):
    """fakeredis' asyncio connection with the ``transport`` that redis-py 8.2 asks a
    connection's writer for before each write (fakeredis 2.40's writer has none), and
    whose socket is closed with it."""

    async def _connect(self) -> None:
        with _server_lock:
            for loop, sock in [entry for entry in _fake_sockets if entry[0].is_closed()]:
                _fake_sockets.remove((loop, sock))
                _close_fake_socket(sock)
        await super()._connect()
        writer, sock = self._writer, self._sock
        if writer is not None and sock is not None:
            writer.transport = _FakeTransport(writer)  # type: ignore[attr-defined]
            with _server_lock:
                _fake_sockets.append((asyncio.get_running_loop(), sock))

    async def disconnect(self, nowait: bool = False, **kwargs: Any) -> None:  # type: ignore[override]  # fakeredis' own
        sock = self._sock
        await super().disconnect(nowait, **kwargs)
        if sock is not None:
            with _server_lock:
                _fake_sockets[:] = [entry for entry in _fake_sockets if entry[1] is not sock]
                _close_fake_socket(sock)


class _FakeTransport:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def is_closing(self) -> bool:
        return self.writer._socket is None


def _fake_client(client_class: Any, pool_class: Any, connection_class: Any) -> Any:
    """A client of the in-process server. Built from redis-py's own client and pool with
    fakeredis' connection class (as fakeredis' docs plug it into other pools), not with
    ``fakeredis.FakeRedis(...)``, whose constructor fails on redis-py 8.2's decorated
    ``__init__``."""
    pool = pool_class(
        connection_class=connection_class,
        server=_fake_server(),
        client_class=client_class,
        decode_responses=True,
    )
    return client_class(connection_pool=pool)


def _fake_sync_client() -> redis.Redis:
    client: redis.Redis = _fake_client(redis.Redis, redis.ConnectionPool, fakeredis.FakeRedisConnection)
    return client


def _fake_server_client() -> redis.Redis:
    """The synchronous client of the in-process server, whatever the settings say now."""
    client = _sync_clients.get(_IN_PROCESS_KEY)
    if client is None:
        with _sync_lock:
            client = _sync_clients.get(_IN_PROCESS_KEY)
            if client is None:
                client = _sync_clients[_IN_PROCESS_KEY] = _fake_sync_client()
    return client


def reset_in_process() -> None:
    """Empty the in-process server, every key and stream of it (tests, between tests)."""
    if _in_process_server is not None:
        _fake_server_client().flushall()


# ---- clients --------------------------------------------------------------------------------
def _new_sync_client(index: int) -> redis.Redis:
    if not redis_configured():
        return _fake_sync_client()
    client: redis.Redis = _open_client(
        index, redis.Redis, redis.sentinel.Sentinel, redis.cluster.RedisCluster, retry=_command_retry(redis.retry.Retry)
    )
    return client


def new_async_client(index: int, **overrides: Any) -> redis.asyncio.Redis:
    """A new asyncio client for shard ``index`` (the broker's dedicated subscriber
    connections use this with their own timeouts, which the in-process server needs not)."""
    if not redis_configured():
        fake: redis.asyncio.Redis = _fake_client(_AsyncRedis, redis.asyncio.ConnectionPool, _FakeAsyncConnection)
        return fake
    client: redis.asyncio.Redis = _open_client(
        index, _AsyncRedis, redis.asyncio.sentinel.Sentinel, _AsyncRedisCluster, **overrides
    )
    return client


def new_async_node_client(host: str, port: int, **overrides: Any) -> redis.asyncio.Redis:
    """A new asyncio client of one node of the Redis Cluster (the broker's subscriber
    connections: SSUBSCRIBE goes to the node that owns the channel's slot), with the
    credentials and TLS of ``REDIS_CLUSTER_URL``."""
    url = settings.REDIS_SHARDS[0]["cluster"]
    given = redis.asyncio.connection.parse_url(url)
    options: dict[str, Any] = {key: given[key] for key in ("username", "password") if given.get(key)}
    if url.startswith("rediss://"):
        options["ssl"] = True
    return _AsyncRedis(host=host, port=port, **_client_options(**options, **overrides))


def _cache_key(index: int) -> tuple[int, str]:
    if not redis_configured():
        return _IN_PROCESS_KEY
    shard = settings.REDIS_SHARDS[index]
    return index, shard.get("url") or shard.get("cluster") or shard["master"]


def sync_redis_at(index: int) -> redis.Redis:
    key = _cache_key(index)
    client = _sync_clients.get(key)
    if client is None:
        with _sync_lock:
            client = _sync_clients.get(key)
            if client is None:
                client = _sync_clients[key] = _new_sync_client(index)
    return client


def sync_redis(shard_key: str) -> redis.Redis:
    """The synchronous client of the shard that holds ``shard_key``."""
    return sync_redis_at(shard_for(shard_key))


def async_redis_at(index: int) -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    clients = _async_clients.get(loop)
    if clients is None:
        if not redis_configured():  # a closed loop's in-process client holds it: let both go
            for closed, held in list(_async_clients.items()):
                if closed.is_closed():
                    held.pop(_IN_PROCESS_KEY, None)
                    if not held:
                        del _async_clients[closed]
        clients = _async_clients[loop] = {}
    key = _cache_key(index)
    client = clients.get(key)
    if client is None:
        options = {"retry": _command_retry(redis.asyncio.retry.Retry)} if redis_configured() else {}
        client = clients[key] = new_async_client(index, **options)
    return client


def async_redis(shard_key: str) -> redis.asyncio.Redis:
    """This event loop's client of the shard that holds ``shard_key``."""
    return async_redis_at(shard_for(shard_key))
