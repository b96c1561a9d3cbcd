"""Settings: one pydantic-settings class per service, `ENISHI_` environment variables.

Defaults work with `enishi dev up`. The README's configuration table lists every variable;
`tests/unit/test_config.py` fails when the table and these classes drift apart.
"""

from __future__ import annotations

import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from enishi import topics

LogFormat = Literal["json", "console"]


def env_var(settings: BaseSettings | type[BaseSettings], field: str) -> str:
    """The environment variable behind `field` of `settings` (`ENISHI_GRPC_PORT`)."""
    return f"{settings.model_config.get('env_prefix', '')}{field}".upper()


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
    # Kafka TLS and SASL (enishi/kafka.py `client_options`, docs/security.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = Field(
        "PLAINTEXT", description="`PLAINTEXT`, `SSL`, `SASL_SSL` or `SASL_PLAINTEXT`."
    )
    kafka_ssl_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for the brokers; unset: the system's CAs."
    )
    kafka_ssl_client_cert_file: Path | None = Field(
        None, description="PEM client certificate chain, for mutual TLS with the brokers."
    )
    kafka_ssl_client_key_file: Path | None = Field(
        None, description="PEM private key of the Kafka client certificate."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`."
    )
    kafka_sasl_username: str = Field("", description="SASL user (the SASL_* protocols).")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password.")
    redis_url: str = Field("redis://localhost:6379/0", description="Customer memory (Redis).")
    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    temporal_namespace: str = Field("default", description="Temporal namespace.")
    # Temporal TLS and API key (enishi/temporal.py `connect`, docs/security.md).
    temporal_tls: bool = Field(
        False, description="Talk TLS to Temporal (implied by a CA file, client cert or API key)."
    )
    temporal_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for Temporal; unset: the system's CAs."
    )
    temporal_tls_client_cert_file: Path | None = Field(
        None, description="PEM client certificate chain, for mutual TLS (Temporal Cloud)."
    )
    temporal_tls_client_key_file: Path | None = Field(
        None, description="PEM private key of the Temporal client certificate."
    )
    temporal_api_key: SecretStr = Field(
        SecretStr(""), description="Temporal Cloud API key, sent as a bearer token over TLS."
    )
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: LogFormat = Field("json", description="`json` (one object a line) or `console`.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port; 0 turns the endpoint off."
    )
    # OpenTelemetry (enishi/tracing.py, docs/tracing.md).
    tracing_enabled: bool = Field(
        False, description="OpenTelemetry traces; off: no spans and no trace headers of our own."
    )
    otlp_endpoint: str = Field(
        "http://localhost:4317", description="OTLP/gRPC collector for traces; `http://`: no TLS."
    )
    tracing_sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of new traces kept; a caller's choice is followed."
    )


class GrpcServiceSettings(CommonSettings):
    """A gRPC service: where it listens and how long it drains on shutdown."""

    grpc_host: str = Field("0.0.0.0", description="Address gRPC services bind to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port of this service.")
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="Seconds in-flight calls get to finish after SIGTERM."
    )
    # Who may call (enishi/auth.py, docs/security.md). Without keys a service will not start.
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys accepted, `name:role[+role]:secret`, comma separated.",
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one `name:role[+role]:secret` a line; adds to those."
    )
    auth_disabled: bool = Field(
        False, description="Serve without API keys: anyone may call anything (warned at start)."
    )
    grpc_tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain; with the key file the service serves TLS only."
    )
    grpc_tls_key_file: Path | None = Field(None, description="PEM private key of that certificate.")
    grpc_tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle: clients must show a certificate it signed (mutual TLS)."
    )


class GrpcClientSettings(BaseSettings):
    """What enishi's gRPC clients (the CLI, the demo) send and trust (enishi/grpc_client.py)."""

    model_config = SettingsConfigDict(env_prefix="ENISHI_", extra="ignore", frozen=True)

    api_key: SecretStr = Field(
        SecretStr(""),
        description="API key clients send; unset: the local stack's admin key (loopback only).",
    )
    grpc_tls: bool = Field(
        False, description="Clients talk TLS (implied by a CA file); no CA file: system roots."
    )
    grpc_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle clients trust for the services' certificates."
    )
    grpc_tls_client_cert_file: Path | None = Field(
        None, description="PEM client certificate chain, for mutual TLS."
    )
    grpc_tls_client_key_file: Path | None = Field(
        None, description="PEM private key of the client certificate."
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
    stream_temporal_concurrency: int = Field(
        32, ge=1, description="Most Temporal calls (journey starts and signals) in flight at once."
    )


class CustomersSettings(GrpcServiceSettings):
    """The customer service: the 360 view, the timeline and preference changes over gRPC."""

    grpc_port: int = Field(50052, ge=0, le=65535, description="gRPC port of this service.")
    metrics_port: int = Field(9103, ge=0, le=65535, description="Prometheus /metrics port.")
    memory_lapsing_days: float = Field(
        60.0, gt=0, description="Days without activity after which a customer is lapsing."
    )
    memory_lapsed_days: float = Field(
        180.0, gt=0, description="Days without activity after which a customer is lapsed."
    )
    customers_journey_query_seconds: float = Field(
        0.5,
        ge=0,
        description="Timeout of the Temporal `current_step` query per active journey; 0: no query.",
    )

    @model_validator(mode="after")
    def _lapsed_after_lapsing(self) -> CustomersSettings:
        if self.memory_lapsed_days <= self.memory_lapsing_days:
            raise ValueError("memory_lapsed_days: must be greater than memory_lapsing_days")
        return self


class SendingPolicySettings(CommonSettings):
    """The send activity's policy: frequency caps, default locale and time zone.

    A mixin: the journey worker's settings inherit it. Rules in docs/sending.md.
    """

    sending_cap_day: int = Field(
        3,
        ge=0,
        description="Messages per customer per local day, all journeys and channels; 0: no cap.",
    )
    sending_cap_week: int = Field(
        10, ge=0, description="Messages per customer per local ISO week (Mon-Sun); 0: no cap."
    )
    sending_cap_channel_day: int = Field(
        2, ge=0, description="Messages per customer per channel per local day; 0: no cap."
    )
    sending_cap_channel_day_overrides: dict[str, int] = Field(
        {}, description='Per-channel daily caps replacing the one above, JSON, e.g. {"sms": 1}.'
    )
    sending_default_locale: str = Field(
        "", description="Locale of customers with none; empty: the journey's first locale."
    )
    sending_fallback_time_zone: str = Field(
        "Asia/Tokyo",
        description="Time zone of customers with none when the journey sets no timezone_fallback.",
    )
    sending_dispatch_expiry_hours: float = Field(
        24.0, ge=0, description="Channel services drop a dispatch older than this; 0: never."
    )

    @model_validator(mode="after")
    def _known_channels_and_zone(self) -> SendingPolicySettings:
        for channel, cap in self.sending_cap_channel_day_overrides.items():
            if channel not in topics.CHANNELS:
                raise ValueError(
                    f"sending_cap_channel_day_overrides: unknown channel {channel!r}, "
                    f"expected one of {', '.join(topics.CHANNELS)}"
                )
            if cap < 0:
                raise ValueError(f"sending_cap_channel_day_overrides.{channel}: must be >= 0")
        try:
            zoneinfo.ZoneInfo(self.sending_fallback_time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"sending_fallback_time_zone: unknown time zone {self.sending_fallback_time_zone!r}"
            ) from None
        return self

    def channel_day_cap(self, channel: str) -> int:
        """The daily cap of one channel (0: none)."""
        return self.sending_cap_channel_day_overrides.get(channel, self.sending_cap_channel_day)


class RegistrySettings(GrpcServiceSettings):
    """The journey registry: versioned definitions and the trigger index (Redis), Temporal."""

    grpc_port: int = Field(50053, ge=0, le=65535, description="gRPC port of this service.")
    metrics_port: int = Field(9104, ge=0, le=65535, description="Prometheus /metrics port.")
    journey_condition_sweep_minutes: int = Field(
        60,
        ge=1,
        le=1440,
        description="How often condition triggers are re-evaluated over every customer (a "
        "phase turning lapsing with time alone): the latency bound of such enrollments.",
    )


class WorkerSettings(SendingPolicySettings):
    """The journey worker: JourneyWorkflow and its activities on the `enishi-journeys` queue."""

    metrics_port: int = Field(9105, ge=0, le=65535, description="Prometheus /metrics port.")
    worker_max_concurrent_activities: int = Field(
        200, ge=1, description="Activities (sends, bookkeeping) one worker runs at once."
    )
    worker_max_concurrent_workflow_tasks: int = Field(
        100, ge=1, description="Workflow tasks one worker runs at once."
    )
    worker_max_cached_workflows: int = Field(
        10_000, ge=0, description="Enrollments kept in memory between their workflow tasks."
    )
    worker_shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="Seconds running activities get to finish after SIGTERM."
    )


class ChannelSettings(CommonSettings):
    """A channel service: consumes `dispatch.<channel>`, delivers through a provider exactly once.

    The knobs of the shared framework (enishi/channels/consumer.py, docs/channels.md).
    """

    channel_topic: str = Field(
        "", description="Topic consumed; empty: `dispatch.<channel>` (tests use others)."
    )
    channel_group_id: str = Field("", description="Consumer group; empty: `enishi-<channel>`.")
    channel_batch_max: int = Field(100, ge=1, description="Most dispatch records per batch.")
    channel_batch_wait_ms: int = Field(
        100, ge=0, description="How long a poll waits for records before delivering fewer."
    )
    channel_concurrency: int = Field(
        16, ge=1, description="Deliveries in flight at once per process (one customer's in order)."
    )
    channel_max_attempts: int = Field(
        5, ge=1, description="Delivery attempts before a transient failure becomes message.failed."
    )
    channel_retry_base_seconds: float = Field(
        0.5, ge=0, description="First retry backoff; doubles per attempt, with jitter."
    )
    channel_retry_max_seconds: float = Field(
        30.0, ge=0, description="Longest wait between attempts (a longer Retry-After still wins)."
    )
    channel_send_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one provider call; a timeout is retried."
    )
    channel_rate_per_second: float = Field(
        50.0,
        ge=0,
        description="Provider calls per second, shared by all instances (Redis); 0: unlimited.",
    )
    channel_rate_burst: int = Field(
        50, ge=1, description="Token bucket size: calls allowed at once after a quiet spell."
    )
    channel_dedupe_hours: float = Field(
        168.0, gt=0, description="How long a dispatch id's delivery record (the dedupe) is kept."
    )

    def topic_for(self, channel: str) -> str:
        """The topic this service consumes."""
        return self.channel_topic or topics.dispatch(channel)

    def group_for(self, channel: str) -> str:
        """The consumer group of this service."""
        return self.channel_group_id or f"enishi-{channel}"


class EmailSettings(ChannelSettings):
    """The email channel service: SMTP (the sandbox's by default)."""

    metrics_port: int = Field(9106, ge=0, le=65535, description="Prometheus /metrics port.")
    email_smtp_host: str = Field("localhost", description="SMTP relay host.")
    email_smtp_port: int = Field(1025, ge=1, le=65535, description="SMTP relay port.")
    email_smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "none", description="`none`, `starttls` (587) or implicit `tls` (465)."
    )
    email_smtp_username: str = Field("", description="SMTP AUTH user; empty: no AUTH.")
    email_smtp_password: SecretStr = Field(SecretStr(""), description="SMTP AUTH password.")
    email_from: str = Field(
        "enishi <noreply@enishi.localhost>",
        description="From header when the dispatch names none.",
    )
    # One-click unsubscribe (RFC 8058): the links we mint and the endpoint that honours them.
    unsubscribe_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs List-Unsubscribe links (32+ characters); the email service needs it.",
    )
    email_unsubscribe_url: str = Field(
        "http://localhost:8027",
        description="Public base URL of the unsubscribe endpoint; links are `<url>/u/<token>`.",
    )
    email_unsubscribe_host: str = Field(
        "0.0.0.0", description="Address the unsubscribe endpoint binds to."
    )
    email_unsubscribe_port: int = Field(
        8027, ge=0, le=65535, description="Unsubscribe endpoint port (GET/POST /u/<token>)."
    )
    email_unsubscribe_mailto: str = Field(
        "",
        description="Also offer `mailto:<this>` in List-Unsubscribe; set only if that mailbox "
        "is processed.",
    )


class LineSettings(ChannelSettings):
    """The LINE channel service: Messaging API push, and the follow/unfollow webhook."""

    metrics_port: int = Field(9107, ge=0, le=65535, description="Prometheus /metrics port.")
    line_api_url: str = Field(
        "http://localhost:8025/line",
        description="Messaging API base URL (production: https://api.line.me).",
    )
    line_channel_access_token: SecretStr = Field(
        SecretStr("sandbox"), description="Channel access token (Bearer)."
    )
    line_channel_secret: SecretStr = Field(
        SecretStr("sandbox"), description="Channel secret: checks X-Line-Signature on webhooks."
    )
    line_webhook_host: str = Field("0.0.0.0", description="Address the LINE webhook binds to.")
    line_webhook_port: int = Field(
        8026, ge=0, le=65535, description="LINE webhook port (POST /line/webhook)."
    )


class SmsSettings(ChannelSettings):
    """The SMS channel service: a generic REST SMS provider (docs/channels.md)."""

    metrics_port: int = Field(9108, ge=0, le=65535, description="Prometheus /metrics port.")
    sms_api_url: str = Field(
        "http://localhost:8025/sms", description="SMS provider base URL (POST <url>/v1/messages)."
    )
    sms_api_key: SecretStr = Field(SecretStr("sandbox"), description="SMS provider API key.")
    sms_sender: str = Field("ENISHI", description="Sender id or number when the dispatch has none.")


class PushSettings(ChannelSettings):
    """The push channel service: FCM HTTP v1 request shape."""

    metrics_port: int = Field(9109, ge=0, le=65535, description="Prometheus /metrics port.")
    push_api_url: str = Field(
        "http://localhost:8025/fcm",
        description="FCM base URL (production: https://fcm.googleapis.com).",
    )
    push_project_id: str = Field("enishi-dev", description="Firebase project id.")
    push_access_token: SecretStr = Field(
        SecretStr("sandbox"), description="OAuth 2 access token for FCM (Bearer)."
    )


class SandboxSettings(CommonSettings):
    """`enishi sandbox`: fake SMTP, LINE, SMS and FCM providers with a ledger, for dev and tests."""

    metrics_port: int = Field(9110, ge=0, le=65535, description="Prometheus /metrics port.")
    sandbox_host: str = Field("127.0.0.1", description="Address the sandbox binds to.")
    sandbox_smtp_port: int = Field(1025, ge=0, le=65535, description="Sandbox SMTP port.")
    sandbox_http_port: int = Field(
        8025, ge=0, le=65535, description="Sandbox HTTP port: LINE, SMS, FCM shapes and /sandbox."
    )
    sandbox_line_webhook_url: str = Field(
        "http://localhost:8026/line/webhook",
        description="Where the sandbox posts LINE webhook events (the LINE service).",
    )
    sandbox_line_channel_secret: SecretStr = Field(
        SecretStr("sandbox"), description="Secret the sandbox signs LINE webhook events with."
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
