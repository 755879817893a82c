"""Turn the Redis environment variables into a list of shards (pure, read by settings).

A shard is ``{"url": ...}``, ``{"sentinels": [(host, port), ...], "master": name, ...}`` or
``{"cluster": url, "seeds": [(host, port), ...]}`` (a Redis Cluster: one "shard" whose
client finds the nodes from the seeds and routes each key to the node of its hash
slot); core.redis_clients opens the clients (for the channel layer too).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from core.env import ImproperlyConfiguredError


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfiguredError(f"environment variable REDIS_SENTINELS needs host:port items, got {address!r}")
    return host, int(port)


def _url_host_port(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ImproperlyConfiguredError(f"environment variable REDIS_CLUSTER_URL needs redis:// URLs, got {url!r}")
    return parsed.hostname, parsed.port or 6379


def redis_shards(
    *,
    url: str | None,
    urls: list[str],
    cluster_url: list[str] | None = None,
    sentinels: list[str],
    sentinel_masters: list[str],
    sentinel_db: int = 0,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> list[dict[str, Any]]:
    """The shards, in order (the order decides which key lives where: keep it stable)."""
    given = [
        name
        for name, value in (
            ("REDIS_URL", url),
            ("REDIS_URLS", urls),
            ("REDIS_SENTINELS", sentinels),
            ("REDIS_CLUSTER_URL", cluster_url),
        )
        if value
    ]
    if len(given) > 1:
        raise ImproperlyConfiguredError(
            f"set only one of REDIS_URL, REDIS_URLS, REDIS_SENTINELS and REDIS_CLUSTER_URL (got {', '.join(given)})"
        )
    if cluster_url:
        if sentinel_masters:
            raise ImproperlyConfiguredError("environment variable REDIS_SENTINELS is required with REDIS_SENTINEL_MASTERS")
        # Several nodes may be named (comma-separated): a client opened while the first is
        # down (a new event loop's, after a failover) finds the cluster through another.
        seeds = [_url_host_port(url) for url in cluster_url]
        return [{"cluster": cluster_url[0], "seeds": seeds}]
    if sentinels:
        if not sentinel_masters:
            raise ImproperlyConfiguredError("environment variable REDIS_SENTINEL_MASTERS is required with REDIS_SENTINELS")
        addresses = [_host_port(address) for address in sentinels]
        return [
            {
                "sentinels": addresses,
                "master": master,
                "db": sentinel_db,
                "password": password,
                "sentinel_password": sentinel_password,
            }
            for master in sentinel_masters
        ]
    if sentinel_masters:
        raise ImproperlyConfiguredError("environment variable REDIS_SENTINELS is required with REDIS_SENTINEL_MASTERS")
    if len(set(urls)) != len(urls):
        raise ImproperlyConfiguredError("environment variable REDIS_URLS lists a server twice")
    return [{"url": item} for item in ([url] if url else urls)]
