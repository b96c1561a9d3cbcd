"""The catalogue of enishi services: what `enishi dev up`, docker-compose and k8s run.

One entry per deployable process under `services/`. Adding a service means adding it here;
`tests/unit/test_deploy_*.py` then insist it is in docker-compose.yml and deploy/ too.
"""

from __future__ import annotations

from dataclasses import dataclass

from enishi.config import (
    CommonSettings,
    CustomersSettings,
    EmailSettings,
    GrpcServiceSettings,
    IngestSettings,
    LineSettings,
    PushSettings,
    RegistrySettings,
    SandboxSettings,
    SmsSettings,
    StreamSettings,
    WorkerSettings,
)


@dataclass(frozen=True)
class ServiceSpec:
    """One deployable process; its default ports come from its settings class."""

    name: str
    module: str  # run as `python -m <module>`
    settings: type[CommonSettings]
    # False for local-only tools (the provider sandbox): in `enishi dev up` and under a
    # docker-compose profile, never in deploy/k8s.
    production: bool = True
    # Settings fields naming further ports the process listens on (besides gRPC and
    # metrics); `enishi dev up` shifts them by its port offset like the others.
    extra_ports: tuple[str, ...] = ()

    @property
    def grpc_port(self) -> int | None:
        """Default gRPC port, or None when the service serves no gRPC."""
        if not issubclass(self.settings, GrpcServiceSettings):
            return None
        return int(self.settings.model_fields["grpc_port"].default)

    @property
    def metrics_port(self) -> int:
        return int(self.settings.model_fields["metrics_port"].default)

    def default_port(self, field: str) -> int:
        """The default of one of this service's port settings."""
        return int(self.settings.model_fields[field].default)

    def port_name(self, field: str) -> str:
        """An extra port's short name (`line_webhook_port` → `webhook`): the dev stack's
        label, the named port of deploy/k8s."""
        return field.removeprefix(f"{self.name}_").removesuffix("_port")

    @property
    def extra_port_numbers(self) -> dict[str, int]:
        """Every extra port by its short name, with its default."""
        return {self.port_name(field): self.default_port(field) for field in self.extra_ports}


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(name="ingest", module="services.ingest", settings=IngestSettings),
    ServiceSpec(name="stream", module="services.stream", settings=StreamSettings),
    ServiceSpec(name="registry", module="services.registry", settings=RegistrySettings),
    ServiceSpec(name="customers", module="services.customers", settings=CustomersSettings),
    ServiceSpec(name="worker", module="services.worker", settings=WorkerSettings),
    # The sandbox before the channel services, so `dev up` has their providers up first.
    ServiceSpec(
        name="sandbox",
        module="services.sandbox",
        settings=SandboxSettings,
        production=False,
        extra_ports=("sandbox_smtp_port", "sandbox_http_port"),
    ),
    ServiceSpec(
        name="email",
        module="services.email",
        settings=EmailSettings,
        extra_ports=("email_unsubscribe_port",),
    ),
    ServiceSpec(
        name="line",
        module="services.line",
        settings=LineSettings,
        extra_ports=("line_webhook_port",),
    ),
    ServiceSpec(name="sms", module="services.sms", settings=SmsSettings),
    ServiceSpec(name="push", module="services.push", settings=PushSettings),
)

PRODUCTION_SERVICES: tuple[ServiceSpec, ...] = tuple(s for s in SERVICES if s.production)
"""What deploy/k8s runs: the catalogue without local-only tools."""


def by_name(name: str) -> ServiceSpec:
    """The service called `name`."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"service: unknown service {name!r}")
