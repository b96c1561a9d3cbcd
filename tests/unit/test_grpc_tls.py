"""TLS between enishi's gRPC clients and servers, with certificates from a throwaway CA."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from pydantic import SecretStr

from enishi import grpc_client
from enishi.auth import Role
from enishi.config import GrpcClientSettings
from enishi.errors import ConfigurationError
from enishi.grpc_server import GrpcServer
from tests import auth_support
from tests.tls_support import Pki, issue_pki
from tests.unit.test_grpc_server import Echo, settings, unary

pytestmark = pytest.mark.unit

ADMIN_SECRET = SecretStr(auth_support.ROLE_KEYS[Role.ADMIN].secret)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield issue_pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture
async def serve(pki: Pki) -> AsyncIterator[Any]:
    """Starts echo servers with TLS settings; yields a function returning their address."""
    servers: list[GrpcServer] = []

    async def start(**tls: Any) -> str:
        server = GrpcServer(settings(**tls), "echo", Echo().add)
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.stop(0)


def client(**values: Any) -> GrpcClientSettings:
    return GrpcClientSettings(api_key=ADMIN_SECRET, **values)


async def echo(address: str, settings: GrpcClientSettings) -> bytes:
    async with grpc_client.aio_channel(address, settings) as channel:
        return await unary(channel, "Echo")(b"over tls", timeout=5)


async def refused(address: str, settings: GrpcClientSettings) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo(address, settings)
    return caught.value.code()


async def test_a_client_trusting_the_ca_talks_to_a_tls_server(pki: Pki, serve: Any) -> None:
    address = await serve(grpc_tls_cert_file=pki.server_cert, grpc_tls_key_file=pki.server_key)

    assert await echo(address, client(grpc_tls_ca_file=pki.ca)) == b"over tls"


async def test_a_plaintext_client_or_one_trusting_another_ca_gets_nowhere(
    pki: Pki, serve: Any
) -> None:
    address = await serve(grpc_tls_cert_file=pki.server_cert, grpc_tls_key_file=pki.server_key)

    assert await refused(address, client()) == grpc.StatusCode.UNAVAILABLE
    assert await refused(address, client(grpc_tls_ca_file=pki.other_ca)) == (
        grpc.StatusCode.UNAVAILABLE
    )


async def test_the_blocking_cli_channel_speaks_tls_too(pki: Pki, serve: Any) -> None:
    address = await serve(grpc_tls_cert_file=pki.server_cert, grpc_tls_key_file=pki.server_key)

    def call() -> bytes:
        with grpc_client.channel(address, client(grpc_tls_ca_file=pki.ca)) as channel:
            method = channel.unary_unary(
                "/enishi.test.v1.Echo/Echo", request_serializer=bytes, response_deserializer=bytes
            )
            return bytes(method(b"cli", timeout=5))

    assert await asyncio.to_thread(call) == b"cli"


async def test_mutual_tls_wants_a_client_certificate_from_the_ca(pki: Pki, serve: Any) -> None:
    address = await serve(
        grpc_tls_cert_file=pki.server_cert,
        grpc_tls_key_file=pki.server_key,
        grpc_tls_client_ca_file=pki.ca,
    )
    with_cert = client(
        grpc_tls_ca_file=pki.ca,
        grpc_tls_client_cert_file=pki.client_cert,
        grpc_tls_client_key_file=pki.client_key,
    )

    assert await echo(address, with_cert) == b"over tls"
    assert await refused(address, client(grpc_tls_ca_file=pki.ca)) == (grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize(
    ("values", "env_var"),
    [
        ({"grpc_tls_cert_file": "scert"}, "ENISHI_GRPC_TLS_KEY_FILE"),
        ({"grpc_tls_key_file": "skey"}, "ENISHI_GRPC_TLS_CERT_FILE"),
        ({"grpc_tls_client_ca_file": "ca"}, "ENISHI_GRPC_TLS_CLIENT_CA_FILE"),
        (
            {"grpc_tls_cert_file": "nope", "grpc_tls_key_file": "skey"},
            "ENISHI_GRPC_TLS_CERT_FILE",
        ),
        (
            {"grpc_tls_cert_file": "scert", "grpc_tls_key_file": "bad"},
            "ENISHI_GRPC_TLS_KEY_FILE",
        ),
        ({"grpc_tls_cert_file": "scert", "grpc_tls_key_file": "ckey"}, "ENISHI_GRPC_TLS_KEY_FILE"),
        (
            {
                "grpc_tls_cert_file": "scert",
                "grpc_tls_key_file": "skey",
                "grpc_tls_client_ca_file": "bad",
            },
            "ENISHI_GRPC_TLS_CLIENT_CA_FILE",
        ),
    ],
)
async def test_unusable_tls_settings_stop_the_server_naming_the_variable(
    pki: Pki, values: dict[str, str], env_var: str
) -> None:
    folder = pki.ca.parent
    (folder / "bad").write_text("not a key")
    server = GrpcServer(settings(**{k: folder / v for k, v in values.items()}), "echo", Echo().add)

    with pytest.raises(ConfigurationError) as caught:
        await server.start()

    assert caught.value.env_var == env_var
    assert env_var in str(caught.value)
