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
