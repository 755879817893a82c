"""The Redis environment variables: one server, shards, or Sentinel, and nothing ambiguous."""

from __future__ import annotations

import collections

import pytest
from django.test import override_settings

from core.env import ImproperlyConfiguredError
from core.redis_clients import group_by_shard, shard_for
from core.redis_config import redis_shards

NONE: dict = {"url": None, "urls": [], "cluster_url": [], "sentinels": [], "sentinel_masters": []}


def test_one_url_is_one_shard():
    assert redis_shards(**{**NONE, "url": "redis://a:6379/0"}) == [{"url": "redis://a:6379/0"}]


def test_nothing_set_keeps_redis_off():
    assert redis_shards(**NONE) == []


def test_urls_are_shards_in_the_order_given():
    shards = redis_shards(**{**NONE, "urls": ["redis://a:6379/0", "redis://b:6379/0"]})
    assert shards == [{"url": "redis://a:6379/0"}, {"url": "redis://b:6379/0"}]


def test_sentinel_masters_are_shards():
    shards = redis_shards(**{**NONE, "sentinels": ["s1:26379", "s2:26379"], "sentinel_masters": ["one", "two"]})
    assert [shard["master"] for shard in shards] == ["one", "two"]
    assert shards[0]["sentinels"] == [("s1", 26379), ("s2", 26379)]


def test_a_cluster_url_is_one_cluster_seeded_by_every_node_named():
    shards = redis_shards(**{**NONE, "cluster_url": ["redis://node1:7000/0", "redis://node2/0"]})
    assert shards == [{"cluster": "redis://node1:7000/0", "seeds": [("node1", 7000), ("node2", 6379)]}]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"url": "redis://a/0", "urls": ["redis://b/0"]}, "set only one of REDIS_URL, REDIS_URLS, REDIS_SENTINELS"),
        ({"url": "redis://a/0", "cluster_url": ["redis://c/0"]}, "got REDIS_URL, REDIS_CLUSTER_URL"),
        ({"cluster_url": ["c:7000"]}, "REDIS_CLUSTER_URL needs redis:// URLs"),
        ({"sentinels": ["s1:26379"]}, "REDIS_SENTINEL_MASTERS is required"),
        ({"sentinel_masters": ["one"]}, "REDIS_SENTINELS is required"),
        ({"sentinels": ["s1"], "sentinel_masters": ["one"]}, "host:port"),
        ({"urls": ["redis://a/0", "redis://a/0"]}, "lists a server twice"),
    ],
)
def test_ambiguous_or_incomplete_settings_fail_at_start_up_with_their_names(given, message):
    with pytest.raises(ImproperlyConfiguredError, match=message):
        redis_shards(**{**NONE, **given})


@override_settings(REDIS_SHARDS=[{"url": "redis://a/0"}, {"url": "redis://b/0"}])
def test_keys_spread_over_both_shards_and_always_land_on_the_same_one():
    counts = collections.Counter(shard_for(f"room:{number}") for number in range(1000))
    assert set(counts) == {0, 1} and min(counts.values()) > 400
    assert all(shard_for(f"room:{number}") == shard_for(f"room:{number}") for number in range(100))
    groups = group_by_shard(["room:1", "room:2", "room:3", "room:1"])
    assert sorted(position for positions in groups.values() for position in positions) == [0, 1, 2, 3]
    assert any(0 in positions and 3 in positions for positions in groups.values())  # the same key, the same shard
