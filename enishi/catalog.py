"""The catalogue of enishi services: what `enishi dev up`, docker-compose and k8s run.

One entry per deployable process under `services/`. Adding a service means adding it here;
`tests/unit/test_deploy_*.py` then insist it is in docker-compose.yml and deploy/ too.
"""

from __future__ import annotations

from dataclasses import dataclass

from enishi.config import (
    CommonSettings,
    CustomersSettings,
    GrpcServiceSettings,
    IngestSettings,
    RegistrySettings,
    StreamSettings,
    WorkerSettings,
)


@dataclass(frozen=True)
class ServiceSpec:
    """One deployable process; its default ports come from its settings class."""

    name: str
    module: str  # run as `python -m <module>`
    settings: type[CommonSettings]

    @property
    def grpc_port(self) -> int | None:
        """Default gRPC port, or None when the service serves no gRPC."""
        if not issubclass(self.settings, GrpcServiceSettings):
            return None
        return int(self.settings.model_fields["grpc_port"].default)

    @property
    def metrics_port(self) -> int:
        return int(self.settings.model_fields["metrics_port"].default)


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(name="ingest", module="services.ingest", settings=IngestSettings),
    ServiceSpec(name="stream", module="services.stream", settings=StreamSettings),
    ServiceSpec(name="registry", module="services.registry", settings=RegistrySettings),
    ServiceSpec(name="customers", module="services.customers", settings=CustomersSettings),
    ServiceSpec(name="worker", module="services.worker", settings=WorkerSettings),
)


def by_name(name: str) -> ServiceSpec:
    """The service called `name`."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"service: unknown service {name!r}")
