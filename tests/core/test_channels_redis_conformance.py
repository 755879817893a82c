"""channels_redis' own tests of its pub/sub layer, run against core.layer.

They are not copied here: at collection, the channels-redis sdist of the installed
version is fetched from PyPI (cached under ~/.cache/rooms-tests), its
tests/test_pubsub.py is read, pointed at our layer and our test Redis, and its tests
run as this module's. Tests of channels_redis' internals (its per-loop ``_layers``, its
``_shards`` and its serializer's exact bytes) are skipped, each with its reason.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
import tarfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from django.test import override_settings

from tests.support.processes import RedisServer

VERSION = importlib.metadata.version("channels-redis")
CACHE = Path.home() / ".cache" / "rooms-tests"
SOURCE = f"channels_redis-{VERSION}/tests/test_pubsub.py"

# The layer's internals, not the layer specification.
NOT_APPLICABLE = {
    "test_loop_instance_channel_layer_reference": "inspects channels_redis' per-loop object (_get_layer)",
    "test_serialize": "pins channels_redis' serializer's bytes; ours encodes for its own wire",
    "test_deserialize": "pins channels_redis' serializer's bytes; ours encodes for its own wire",
    "test_multi_event_loop_garbage_collection": "inspects channels_redis' per-loop registry (_layers)",
    "test_receive_on_non_owned_general_channel": "sends a str, where the layer specification requires a dict "
    "(Channels' InMemoryChannelLayer refuses it too); tests/core/test_layer.py covers general channels with dicts",
    "test_auto_reconnect": "closes channels_redis' own connections (_shards[0]._redis); tests/core/test_layer.py and "
    "tests/multiworker cover reconnection",
}


def _sdist_source() -> str:
    archive = CACHE / f"channels_redis-{VERSION}.tar.gz"
    if not archive.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*command, "--dest", str(CACHE), f"channels-redis=={VERSION}"], check=True, timeout=120)
    with tarfile.open(archive) as tar:
        member = tar.extractfile(SOURCE)
        assert member is not None, f"{SOURCE} is not in the sdist"
        return member.read().decode()


def _pointed_at_our_layer(source: str) -> str:
    replacements = {
        "import async_timeout\n": "",
        "from channels_redis.pubsub import RedisPubSubChannelLayer\n": (
            "from core.layer import RealtimeChannelLayer as RedisPubSubChannelLayer\n"
        ),
        "from channels_redis.utils import _close_redis\n": "",
        "@pytest.fixture()\nasync def": "@pytest_asyncio.fixture()\nasync def",
    }
    for old, new in replacements.items():
        assert old in source, f"channels_redis' tests changed: {old!r} is gone; update tests/core/{Path(__file__).name}"
        source = source.replace(old, new)
    return source


@pytest.fixture(autouse=True)
def _our_redis(redis_server: RedisServer) -> Iterator[None]:
    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        yield


_namespace: dict[str, object] = {
    "__name__": __name__,
    "pytest_asyncio": pytest_asyncio,
    "async_timeout": types.SimpleNamespace(timeout=asyncio.timeout),
}
exec(compile(_pointed_at_our_layer(_sdist_source()), f"<channels_redis {SOURCE}>", "exec"), _namespace)
for _name, _value in _namespace.items():
    if _name.startswith("test_") and callable(_value):
        globals()[_name] = pytest.mark.skip(reason=NOT_APPLICABLE[_name])(_value) if _name in NOT_APPLICABLE else _value
    elif _name in ("channel_layer", "other_channel_layer"):
        globals()[_name] = _value
