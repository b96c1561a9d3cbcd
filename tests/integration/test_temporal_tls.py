"""Temporal over mutual TLS, for real: `enishi.temporal.connect` configured by
`ENISHI_TEMPORAL_*` settings alone, against the suite's Temporal dev server behind a TLS
proxy (the dev server cannot serve TLS; tests/tls_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from pydantic import SecretStr

from enishi.config import CommonSettings
from enishi.temporal import connect
from tests.conftest import LocalServers
from tests.tls_support import Pki, TlsProxy, issue_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield issue_pki(tmp_path_factory.mktemp("temporal-tls"))


@pytest_asyncio.fixture
async def proxy(servers: LocalServers, pki: Pki) -> AsyncIterator[TlsProxy]:
    async with TlsProxy(pki, servers.temporal_address, client_ca=pki.ca) as started:
        yield started


def mtls(proxy: TlsProxy, pki: Pki, **values: object) -> CommonSettings:
    return CommonSettings.model_validate(
        {
            "temporal_address": f"localhost:{proxy.port}",
            "temporal_tls_ca_file": pki.ca,
            "temporal_tls_client_cert_file": pki.client_cert,
            "temporal_tls_client_key_file": pki.client_key,
            **values,
        }
    )


async def test_a_client_with_the_ca_and_a_client_certificate_reaches_temporal(
    proxy: TlsProxy, pki: Pki
) -> None:
    # The dev server ignores API keys; sending one proves it rides along over TLS.
    client = await connect(mtls(proxy, pki, temporal_api_key=SecretStr("cloud-key")))

    assert await client.service_client.check_health()
    assert [w async for w in client.list_workflows("WorkflowType = 'NoSuchType'")] == []


async def test_a_server_certificate_from_another_ca_is_refused(proxy: TlsProxy, pki: Pki) -> None:
    with pytest.raises(RuntimeError, match="UnknownIssuer"):
        await connect(mtls(proxy, pki, temporal_tls_ca_file=pki.other_ca))


async def test_plaintext_cannot_talk_to_a_tls_frontend(proxy: TlsProxy) -> None:
    plaintext = CommonSettings(temporal_address=f"localhost:{proxy.port}")

    with pytest.raises(RuntimeError, match="Failed client connect"):
        await connect(plaintext)
