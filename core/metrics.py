"""Prometheus metrics. With PROMETHEUS_MULTIPROC_DIR set (``make serve`` sets it), every
worker process writes its values there and /metrics, on whichever worker a scrape lands,
reports the sum over all of them (ops.views.metrics); without it, this process's."""

from prometheus_client import Counter, Gauge

# livesum: the open connections of the workers alive now, summed.
WS_CONNECTIONS = Gauge("chat_websocket_connections", "Open room WebSocket connections", multiprocess_mode="livesum")
WS_CLOSES = Counter("chat_websocket_closes_total", "Room WebSockets closed by the server, by close code", ["code"])
MESSAGES_CREATED = Counter("chat_messages_created_total", "Chat messages committed by this process")
FRAMES_REJECTED = Counter("chat_frames_rejected_total", "Client frames answered with an error frame", ["code"])
BROKER_PUBLISHED = Counter("chat_broker_published_total", "Events published to the broker")
BROKER_PUBLISH_ERRORS = Counter("chat_broker_publish_errors_total", "Publishes that failed (repaired by backfill)")
BROKER_CONNECTS = Counter("chat_broker_connects_total", "Subscriber connections established to the broker")
BACKFILLS = Counter("chat_backfills_total", "Gaps in a room's broadcasts repaired from the database")
BACKFILLED_MESSAGES = Counter("chat_backfilled_messages_total", "Messages delivered by backfill instead of broadcast")
