"""Prometheus metrics: every metric name enishi exports is defined here, once.

Metrics live in the default `prometheus_client` registry, which
`enishi.http_endpoint.MetricsEndpoint` serves at `/metrics`. Add new metrics to this module
(and to docs/metrics.md), never ad hoc in a service, so names and labels stay consistent.
Labels carry no personal data and no unbounded values (no customer ids).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

# Sub-millisecond buckets matter: most unary calls (health, small batches) finish well
# under the 5 ms where prometheus_client's default buckets start.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

GRPC_CALLS: Final = Counter(
    "enishi_grpc_calls",
    "gRPC calls served, by full method name and status code.",
    ("method", "code"),
)
"""Exported as `enishi_grpc_calls_total`."""

GRPC_CALL_SECONDS: Final = Histogram(
    "enishi_grpc_call_seconds",
    "Time to serve one gRPC call (for streams: until the last message), by method.",
    ("method",),
    buckets=LATENCY_BUCKETS,
)

STREAM_RECORDS: Final = Counter(
    "enishi_stream_records",
    "Touchpoint records consumed by the stream processor, by outcome "
    "(applied, duplicate, dead_lettered).",
    ("outcome",),
)
"""Exported as `enishi_stream_records_total`."""

STREAM_BATCH_SECONDS: Final = Histogram(
    "enishi_stream_batch_seconds",
    "Time to apply one consumed batch: decode, Redis writes, dead letters, hook.",
    buckets=LATENCY_BUCKETS,
)

CONSUMER_RETRIES: Final = Counter(
    "enishi_consumer_batch_retries",
    "Batches a Kafka consumer processes again because Redis, Kafka or Temporal could not be "
    "reached (the loop backs off and retries the batch instead of exiting), by consumer.",
    ("consumer",),
)
"""Exported as `enishi_consumer_batch_retries_total`."""

TEMPORAL_CALLS: Final = Counter(
    "enishi_temporal_calls",
    "Calls the stream processor made to Temporal, by kind (signal_with_start, signal). "
    "Events no journey triggers on or awaits make none.",
    ("kind",),
)
"""Exported as `enishi_temporal_calls_total`."""

TRIGGER_DECISIONS: Final = Counter(
    "enishi_trigger_decisions",
    "Journey trigger entries matched by an event's name, by what became of them (enrolled, "
    "holdout, resumed, filtered, error, active, reentry_blocked, cap, duplicate).",
    ("outcome",),
)
"""Exported as `enishi_trigger_decisions_total`."""

CHANNEL_DISPATCHES: Final = Counter(
    "enishi_channel_dispatches",
    "Dispatch records a channel service consumed, by channel and outcome (sent, failed, "
    "expired, duplicate, dead_lettered).",
    ("channel", "outcome"),
)
"""Exported as `enishi_channel_dispatches_total`."""

CHANNEL_ATTEMPTS: Final = Counter(
    "enishi_channel_attempts",
    "Provider calls by channel, provider and result (sent, transient, permanent).",
    ("channel", "provider", "result"),
)
"""Exported as `enishi_channel_attempts_total`."""

CHANNEL_SEND_SECONDS: Final = Histogram(
    "enishi_channel_send_seconds",
    "Time of one provider call, by channel.",
    ("channel",),
    buckets=LATENCY_BUCKETS,
)

CHANNEL_RATE_LIMITED_SECONDS: Final = Counter(
    "enishi_channel_rate_limited_seconds",
    "Seconds deliveries waited for the shared provider token bucket, by provider.",
    ("provider",),
)
"""Exported as `enishi_channel_rate_limited_seconds_total`."""

UNSUBSCRIBE_REQUESTS: Final = Counter(
    "enishi_unsubscribe_requests",
    "Requests to the email service's one-click unsubscribe endpoint, by result (unsubscribed, "
    "shown, invalid, unavailable).",
    ("result",),
)
"""Exported as `enishi_unsubscribe_requests_total`."""
