"""Register and activate the demo's journeys through the JourneyRegistry gRPC API.

Idempotent, so the demo can run again and again: registering identical content returns the
version it already has, and activating the live version changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc

from enishi import grpc_client
from enishi.demo.population import FIRST_ORDER, WELCOME
from enishi.journeys import JourneyInvalid, parse_journey
from enishi.v1 import journey_registry_pb2 as registry_pb2
from enishi.v1 import journey_registry_pb2_grpc as registry_grpc

EXAMPLES: Final = Path(__file__).resolve().parents[2] / "examples" / "journeys"
DEMO_JOURNEYS: Final = (WELCOME, FIRST_ORDER)
DESIGNER: Final = "enishi-demo"
"""Who registers a journey whose source names no designer."""
CALL_TIMEOUT: Final = 30.0


class JourneySetupError(RuntimeError):
    """A demo journey could not be registered or activated; the message says why."""


@dataclass(frozen=True)
class ActiveJourney:
    """A demo journey as the registry now runs it."""

    journey_id: str
    version: int
    created: bool  # a new version was stored (first run, or the file changed)


async def ensure_active(target: str, examples: Path = EXAMPLES) -> list[ActiveJourney]:
    """Register each demo journey's example file and make that version live."""
    active = []
    async with grpc_client.aio_channel(target) as channel:
        stub = registry_grpc.JourneyRegistryStub(channel)
        for journey_id in DEMO_JOURNEYS:
            path = examples / f"{journey_id}.yaml"
            try:
                source = path.read_text(encoding="utf-8")
                # The designer the file names, so every message's why shows them.
                designer = parse_journey(source).designer or DESIGNER
            except OSError as exc:
                raise JourneySetupError(f"{path}: cannot read: {exc}") from None
            except JourneyInvalid as exc:
                raise JourneySetupError(f"{path}: invalid journey: {exc}") from None
            try:
                registered = await stub.RegisterJourney(
                    registry_pb2.RegisterJourneyRequest(source=source, designer=designer),
                    timeout=CALL_TIMEOUT,
                )
                info = registered.version
                await stub.ActivateJourney(
                    registry_pb2.ActivateJourneyRequest(
                        journey_id=info.journey_id, version=info.version
                    ),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                raise JourneySetupError(
                    f"{path}: the registry at {target} answered {exc.code().name}: {exc.details()}"
                ) from None
            active.append(ActiveJourney(info.journey_id, info.version, registered.created))
    return active
