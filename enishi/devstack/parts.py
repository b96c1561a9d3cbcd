"""The parts of the local stack: how to start each, on which ports, and how to probe it."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from enishi.catalog import SERVICES, by_name
from enishi.config import DevStackSettings
from enishi.devstack import api_keys, binaries, probes
from workflows.contract import SEARCH_ATTRIBUTES

LOOPBACK = "127.0.0.1"
# Signs the local stack's List-Unsubscribe links, which only ever point at this machine.
DEV_UNSUBSCRIBE_SECRET = "enishi-local-stack-only-unsubscribe-secret"


@dataclass(frozen=True)
class Port:
    """A port a part listens on, and the setting that moves it."""

    number: int
    label: str
    setting: str


@dataclass(frozen=True)
class Part:
    """One process of the local stack."""

    name: str
    kind: Literal["server", "service"]
    argv: tuple[str, ...]
    ports: tuple[Port, ...]
    probe: Callable[[], Awaitable[bool]] = field(compare=False)
    env: tuple[tuple[str, str], ...] = ()

    @property
    def main_port(self) -> int:
        return self.ports[0].number


def kafka_bootstrap(settings: DevStackSettings) -> str:
    return f"{LOOPBACK}:{settings.kafka_port}"


def redis_url(settings: DevStackSettings) -> str:
    return f"redis://{LOOPBACK}:{settings.redis_port}/0"


def temporal_address(settings: DevStackSettings) -> str:
    return f"{LOOPBACK}:{settings.temporal_port}"


NOT_INHERITED: Final = (
    "ENISHI_KAFKA_SECURITY_PROTOCOL",
    "ENISHI_KAFKA_SSL_",
    "ENISHI_KAFKA_SASL_",
    "ENISHI_TEMPORAL_TLS",
    "ENISHI_TEMPORAL_API_KEY",
    "ENISHI_TEMPORAL_NAMESPACE",
)
"""Prefixes of settings for remote Kafka/Temporal that a shell may hold and the local servers
(plaintext Tansu, the dev server's `default` namespace) would refuse: never passed on."""


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The parts' environment from the shell's, without the settings for remote servers."""
    return {k: v for k, v in environ.items() if not k.startswith(NOT_INHERITED)}


def service_env(settings: DevStackSettings) -> dict[str, str]:
    """The ENISHI_* settings every enishi service started by the stack receives."""
    return {
        "ENISHI_KAFKA_BOOTSTRAP": kafka_bootstrap(settings),
        "ENISHI_KAFKA_IDEMPOTENCE": "false",  # Tansu has no InitProducerId
        "ENISHI_REDIS_URL": redis_url(settings),
        "ENISHI_TEMPORAL_ADDRESS": temporal_address(settings),
        "ENISHI_LOG_FORMAT": "json",
        "ENISHI_GRPC_HOST": LOOPBACK,
        # Written by `Supervisor.up` before the services start.
        "ENISHI_API_KEYS_FILE": str(api_keys.path(settings.state_dir)),
    }


def server_parts(settings: DevStackSettings) -> list[Part]:
    """Tansu, the Temporal dev server (SQLite file) and Valkey (append-only file)."""
    data = settings.state_dir.resolve() / "data"
    bootstrap, url, address = (
        kafka_bootstrap(settings),
        redis_url(settings),
        temporal_address(settings),
    )
    listener = f"tcp://{bootstrap}"
    return [
        Part(
            name="kafka",
            kind="server",
            argv=(
                str(binaries.tansu()),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ),
            ports=(Port(settings.kafka_port, "kafka", "ENISHI_DEV_KAFKA_PORT"),),
            probe=lambda: probes.kafka(bootstrap),
        ),
        Part(
            name="temporal",
            kind="server",
            argv=(
                str(binaries.temporal()),
                "server",
                "start-dev",
                "--ip",
                LOOPBACK,
                "--port",
                str(settings.temporal_port),
                "--ui-port",
                str(settings.temporal_ui_port),
                "--db-filename",
                str(data / "temporal.db"),
                "--log-level",
                "warn",
                *_search_attribute_flags(),
            ),
            ports=(
                Port(settings.temporal_port, "grpc", "ENISHI_DEV_TEMPORAL_PORT"),
                Port(settings.temporal_ui_port, "ui", "ENISHI_DEV_TEMPORAL_UI_PORT"),
            ),
            probe=lambda: probes.temporal(address),
        ),
        Part(
            name="redis",
            kind="server",
            argv=(
                str(binaries.valkey_server()),
                "--bind",
                LOOPBACK,
                "--port",
                str(settings.redis_port),
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
            ),
            ports=(Port(settings.redis_port, "redis", "ENISHI_DEV_REDIS_PORT"),),
            probe=lambda: probes.redis_ping(url),
        ),
    ]


def _search_attribute_flags() -> list[str]:
    flags: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


def provider_env(settings: DevStackSettings) -> dict[str, str]:
    """Point the channel services at the sandbox's (offset) ports, and the sandbox at LINE's.

    Every service gets these; settings classes ignore variables that are not theirs.
    """
    offset = settings.service_port_offset
    sandbox, line = by_name("sandbox"), by_name("line")
    smtp = sandbox.default_port("sandbox_smtp_port") + offset
    http = f"http://{LOOPBACK}:{sandbox.default_port('sandbox_http_port') + offset}"
    webhook = line.default_port("line_webhook_port") + offset
    unsubscribe = by_name("email").default_port("email_unsubscribe_port") + offset
    return {
        "ENISHI_EMAIL_SMTP_HOST": LOOPBACK,
        "ENISHI_EMAIL_SMTP_PORT": str(smtp),
        "ENISHI_EMAIL_UNSUBSCRIBE_URL": f"http://{LOOPBACK}:{unsubscribe}",
        "ENISHI_UNSUBSCRIBE_SECRET": DEV_UNSUBSCRIBE_SECRET,
        "ENISHI_LINE_API_URL": f"{http}/line",
        "ENISHI_SMS_API_URL": f"{http}/sms",
        "ENISHI_PUSH_API_URL": f"{http}/fcm",
        "ENISHI_SANDBOX_LINE_WEBHOOK_URL": f"http://{LOOPBACK}:{webhook}/line/webhook",
    }


def service_parts(settings: DevStackSettings) -> list[Part]:
    """Every enishi service in the catalogue, each its own `python -m` process."""
    parts: list[Part] = []
    common = {**service_env(settings), **provider_env(settings)}
    offset = settings.service_port_offset
    for spec in SERVICES:
        metrics_port = spec.metrics_port + offset
        env = {**common, "ENISHI_METRICS_PORT": str(metrics_port)}
        ports = []
        probe: Callable[[], Awaitable[bool]]
        if spec.grpc_port is not None:
            grpc_port = spec.grpc_port + offset
            env["ENISHI_GRPC_PORT"] = str(grpc_port)
            ports.append(Port(grpc_port, "grpc", "ENISHI_DEV_SERVICE_PORT_OFFSET"))
            probe = _grpc_probe(f"{LOOPBACK}:{grpc_port}")
        else:
            probe = _http_probe(f"http://{LOOPBACK}:{metrics_port}/readyz")
        ports.append(Port(metrics_port, "metrics", "ENISHI_DEV_SERVICE_PORT_OFFSET"))
        for setting in spec.extra_ports:
            port = spec.default_port(setting) + offset
            env[f"ENISHI_{setting.upper()}"] = str(port)
            ports.append(Port(port, spec.port_name(setting), "ENISHI_DEV_SERVICE_PORT_OFFSET"))
        parts.append(
            Part(
                name=spec.name,
                kind="service",
                argv=(sys.executable, "-m", spec.module),
                ports=tuple(ports),
                probe=probe,
                env=tuple(sorted(env.items())),
            )
        )
    return parts


def _grpc_probe(target: str) -> Callable[[], Awaitable[bool]]:
    return lambda: probes.grpc_health(target)


def _http_probe(url: str) -> Callable[[], Awaitable[bool]]:
    return lambda: probes.http_ready(url)


def all_parts(settings: DevStackSettings, *, services: bool = True) -> list[Part]:
    """Servers first, then (optionally) the enishi services that run on them."""
    parts = server_parts(settings)
    if services:
        parts += service_parts(settings)
    return parts


def local_port(service: str, setting: str = "grpc_port") -> int:
    """Where `enishi dev up` puts one of `service`'s ports: its default plus the offset."""
    return by_name(service).default_port(setting) + DevStackSettings().service_port_offset


def local_target(service: str) -> str:
    """`host:port` of `service`'s gRPC server in the local stack (the CLIs' default target)."""
    return f"{LOOPBACK}:{local_port(service)}"
