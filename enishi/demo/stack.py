"""Where the demo finds the local stack from `enishi dev up`, and whether it is up.

Service ports are the catalogue's defaults plus `ENISHI_DEV_SERVICE_PORT_OFFSET`, found the
way every CLI finds them (`enishi.devstack.parts.local_port`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from enishi.cli.sandbox import base_url
from enishi.config import DevStackSettings
from enishi.devstack import probes
from enishi.devstack.parts import LOOPBACK, kafka_bootstrap, local_port, local_target

# What the demo talks to: gRPC services by health check, the rest by their readiness.
GRPC_SERVICES = ("ingest", "customers", "registry")
CONSUMERS = ("stream", "worker", "sandbox", "email", "line", "sms", "push")


@dataclass(frozen=True)
class Stack:
    """Addresses of the parts the demo uses."""

    settings: DevStackSettings
    kafka_bootstrap: str
    sandbox_url: str

    @classmethod
    def from_env(cls) -> Stack:
        settings = DevStackSettings()
        return cls(settings, kafka_bootstrap(settings), base_url())

    def grpc_target(self, service: str) -> str:
        return local_target(service)

    def metrics_url(self, service: str) -> str:
        return f"http://{LOOPBACK}:{local_port(service, 'metrics_port')}/metrics"

    def ready_url(self, service: str) -> str:
        return self.metrics_url(service).removesuffix("/metrics") + "/readyz"

    async def down_parts(self) -> list[str]:
        """The parts that do not answer their health check (empty: all up)."""
        checks = {"kafka": probes.kafka(self.kafka_bootstrap)}
        checks |= {name: probes.grpc_health(self.grpc_target(name)) for name in GRPC_SERVICES}
        checks |= {name: probes.http_ready(self.ready_url(name)) for name in CONSUMERS}
        results = await asyncio.gather(*checks.values())
        return [name for name, ok in zip(checks, results, strict=True) if not ok]
