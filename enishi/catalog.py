"""The catalogue of enishi services: what `enishi dev up`, docker-compose and k8s run.

One entry per deployable process under `services/`. Adding a service means adding it here;
`tests/unit/test_deploy_*.py` then insist it is in docker-compose.yml and deploy/ too.
"""

from __future__ import annotations

from dataclasses import dataclass

from enishi.config import CommonSettings, IngestSettings


@dataclass(frozen=True)
class ServiceSpec:
    """One deployable process."""

    name: str
    module: str  # run as `python -m <module>`
    settings: type[CommonSettings]
    grpc_port: int | None  # None: not a gRPC server
    metrics_port: int


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="ingest",
        module="services.ingest",
        settings=IngestSettings,
        grpc_port=50051,
        metrics_port=9101,
    ),
)


def by_name(name: str) -> ServiceSpec:
    """The service called `name`."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"service: unknown service {name!r}")
