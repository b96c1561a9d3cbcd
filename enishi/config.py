"""Settings: one pydantic-settings class per service, `ENISHI_` environment variables.

Defaults work with `enishi dev up`. The README's configuration table lists every variable;
`tests/unit/test_config.py` fails when the table and these classes drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from enishi import topics

LogFormat = Literal["json", "console"]


class CommonSettings(BaseSettings):
    """What every enishi process reads: where Kafka, Redis and Temporal are, how to log."""

    model_config = SettingsConfigDict(env_prefix="ENISHI_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(
        "localhost:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_idempotence: bool = Field(
        False,
        description="Idempotent producers. Turn on for Apache Kafka; Tansu (dev) lacks them.",
    )
    redis_url: str = Field("redis://localhost:6379/0", description="Customer memory (Redis).")
    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    temporal_namespace: str = Field("default", description="Temporal namespace.")
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: LogFormat = Field("json", description="`json` (one object a line) or `console`.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port; 0 turns the endpoint off."
    )


class GrpcServiceSettings(CommonSettings):
    """A gRPC service: where it listens and how long it drains on shutdown."""

    grpc_host: str = Field("0.0.0.0", description="Address gRPC services bind to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port of this service.")
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="Seconds in-flight calls get to finish after SIGTERM."
    )


class IngestSettings(GrpcServiceSettings):
    """The ingest service: touchpoints in over gRPC, out to Kafka."""

    metrics_port: int = Field(9101, ge=0, le=65535, description="Prometheus /metrics port.")
    ingest_batch_max: int = Field(
        1000, ge=1, description="Most events one BatchTrack call may carry."
    )
    kafka_linger_ms: int = Field(5, ge=0, description="Producer linger, for batching.")
    ingest_props_max_bytes: int = Field(
        32 * 1024, ge=64, description="Largest serialized props (or Identify traits), in bytes."
    )
    ingest_props_max_depth: int = Field(
        8, ge=1, le=64, description="Deepest nesting of objects and lists in props and traits."
    )
    ingest_max_future_hours: float = Field(
        24.0, ge=0, description="How far in the future an occurred_at may lie."
    )


class StreamSettings(CommonSettings):
    """The stream processor: consumes touchpoints, writes customer memory."""

    metrics_port: int = Field(9102, ge=0, le=65535, description="Prometheus /metrics port.")
    stream_topic: str = Field(
        topics.TOUCHPOINTS, description="Topic the stream processor consumes (tests use others)."
    )
    stream_group_id: str = Field("enishi-stream", description="Stream processor consumer group.")
    stream_batch_max: int = Field(
        2000, ge=1, description="Most records applied to Redis in one pipelined batch."
    )
    stream_batch_wait_ms: int = Field(
        50, ge=0, description="How long a poll waits for records before applying fewer."
    )
    memory_timeline_max: int = Field(
        200, ge=1, description="Newest timeline entries kept in full per customer."
    )
    memory_dedupe_window: int = Field(
        10_000, ge=1, description="Newest event ids remembered per customer for dedupe."
    )


class DevStackSettings(BaseSettings):
    """`enishi dev up`: ports and files of the embedded local stack."""

    model_config = SettingsConfigDict(env_prefix="ENISHI_DEV_", extra="ignore", frozen=True)

    state_dir: Path = Field(Path(".enishi"), description="Logs, pids, SQLite and AOF files.")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Tansu (Kafka) port.")
    temporal_port: int = Field(7233, ge=1, le=65535, description="Temporal frontend port.")
    temporal_ui_port: int = Field(8233, ge=1, le=65535, description="Temporal Web UI port.")
    redis_port: int = Field(6379, ge=1, le=65535, description="Valkey (Redis) port.")
    service_port_offset: int = Field(
        0, ge=0, le=10000, description="Added to every enishi service's gRPC and metrics port."
    )
    partitions: int = Field(4, ge=1, le=256, description="Partitions per created topic.")
    start_timeout_seconds: float = Field(
        60.0, gt=0, description="How long each part may take to become healthy."
    )
