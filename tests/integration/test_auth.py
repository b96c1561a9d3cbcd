"""Every method of every real gRPC service checks its caller's key: none, a key without the
method's role, and a key with it. The methods come from the protos, so a new RPC is tested
(and must be in enishi/auth.py's table) the day it is added."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf.descriptor import ServiceDescriptor
from typer.testing import CliRunner

from enishi import grpc_client
from enishi.auth import Role, required_role
from enishi.cli.main import app
from enishi.v1 import customer_service_pb2, ingest_service_pb2, journey_registry_pb2
from tests import auth_support
from tests.conftest import LocalServers
from tests.integration.test_customers import running_customers
from tests.integration.test_ingest import serving_ingest
from tests.integration.test_registry import new_id, running_registry, source

pytestmark = pytest.mark.asyncio(loop_scope="session")

REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@contextlib.asynccontextmanager
async def ingest(servers: LocalServers) -> AsyncIterator[str]:
    async with serving_ingest(servers) as (address, _):
        yield address


@contextlib.asynccontextmanager
async def customers(servers: LocalServers) -> AsyncIterator[str]:
    async with running_customers(servers) as (_, address):
        yield address


@contextlib.asynccontextmanager
async def registry(servers: LocalServers) -> AsyncIterator[str]:
    async with running_registry(servers) as running:
        yield running.target


Serving = Callable[[LocalServers], contextlib.AbstractAsyncContextManager[str]]
SERVICES: list[tuple[ServiceDescriptor, Serving]] = [
    (ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"], ingest),
    (customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"], customers),
    (journey_registry_pb2.DESCRIPTOR.services_by_name["JourneyRegistry"], registry),
]


async def code_of(channel: grpc.aio.Channel, method: str) -> grpc.StatusCode:
    """The status of calling `method` with an empty request (all fields at their defaults)."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    try:
        await call(b"", timeout=20)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("service", "serving"), SERVICES, ids=[service.name for service, _ in SERVICES]
)
async def test_every_method_refuses_a_missing_key_and_a_key_without_its_role(
    servers: LocalServers, service: ServiceDescriptor, serving: Serving
) -> None:
    async with serving(servers) as address:
        for descriptor in service.methods:
            assert not (descriptor.client_streaming or descriptor.server_streaming), (
                f"{descriptor.full_name}: streaming; extend this test"
            )
            method = f"/{service.full_name}/{descriptor.name}"
            role = required_role(method)
            assert role is not None and role is not Role.ADMIN, method
            keyless = grpc.aio.insecure_channel(address)
            wrong = grpc_client.aio_channel(
                address, auth_support.client(auth_support.ALL_BUT_KEYS[role])
            )
            right = grpc_client.aio_channel(
                address, auth_support.client(auth_support.ROLE_KEYS[role])
            )
            async with keyless, wrong, right:
                codes = await asyncio.gather(
                    code_of(keyless, method), code_of(wrong, method), code_of(right, method)
                )
            assert codes[0] == grpc.StatusCode.UNAUTHENTICATED, method
            assert codes[1] == grpc.StatusCode.PERMISSION_DENIED, method
            assert codes[2] not in REFUSALS, method


async def test_the_cli_with_a_reader_key_cannot_register_and_says_which_key_to_set(
    servers: LocalServers, tmp_path: Path
) -> None:
    journey = tmp_path / "journey.yaml"
    journey.write_text(source(new_id()))
    async with running_registry(servers) as running:
        env = {
            "ENISHI_REGISTRY_TARGET": running.target,
            "ENISHI_API_KEY": auth_support.ROLE_KEYS[Role.READER].secret,
            "COLUMNS": "200",
        }
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["journey", "register", str(journey)], env=env
        )
        listed = await asyncio.to_thread(CliRunner().invoke, app, ["journey", "list"], env=env)

    assert result.exit_code == 1
    assert "PERMISSION_DENIED" in result.output and "needs role designer" in result.output
    assert "ENISHI_API_KEY" in result.output
    assert auth_support.ROLE_KEYS[Role.READER].secret not in result.output
    assert listed.exit_code == 0, listed.output
