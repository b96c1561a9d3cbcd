"""`enishi.temporal.connect`: namespace, TLS, mutual TLS, the API key and tracing applied
from settings, checked before any connection."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.service import TLSConfig

from enishi import temporal
from enishi.config import CommonSettings
from enishi.errors import ConfigurationError
from tests.tls_support import Pki, issue_pki
from tests.tracing_support import traced

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield issue_pki(tmp_path_factory.mktemp("temporal-pki"))


def settings(**values: Any) -> CommonSettings:
    return CommonSettings(temporal_address="temporal.example:7233", **values)


def test_plaintext_is_the_default() -> None:
    assert temporal.tls_config(settings()) is False


def test_tls_on_without_files_trusts_the_system_cas() -> None:
    assert temporal.tls_config(settings(temporal_tls=True)) is True


def test_an_api_key_alone_implies_tls() -> None:
    assert temporal.tls_config(settings(temporal_api_key=SecretStr("key"))) is True


def test_a_ca_file_is_trusted_and_implies_tls(pki: Pki) -> None:
    config = temporal.tls_config(settings(temporal_tls_ca_file=pki.ca))

    assert config == TLSConfig(server_root_ca_cert=pki.ca.read_bytes())


def test_a_client_certificate_makes_it_mutual_tls(pki: Pki) -> None:
    config = temporal.tls_config(
        settings(
            temporal_tls_ca_file=pki.ca,
            temporal_tls_client_cert_file=pki.client_cert,
            temporal_tls_client_key_file=pki.client_key,
        )
    )

    assert config == TLSConfig(
        server_root_ca_cert=pki.ca.read_bytes(),
        client_cert=pki.client_cert.read_bytes(),
        client_private_key=pki.client_key.read_bytes(),
    )


def test_temporal_cloud_mtls_needs_no_ca_file(pki: Pki) -> None:
    config = temporal.tls_config(
        settings(
            temporal_tls_client_cert_file=pki.client_cert,
            temporal_tls_client_key_file=pki.client_key,
        )
    )

    assert isinstance(config, TLSConfig)
    assert config.server_root_ca_cert is None  # the system's CAs
    assert config.client_cert == pki.client_cert.read_bytes()


@pytest.mark.parametrize(
    ("files", "env_var"),
    [
        ({"temporal_tls_ca_file": "missing.pem"}, "ENISHI_TEMPORAL_TLS_CA_FILE"),
        ({"temporal_tls_ca_file": "not-pem"}, "ENISHI_TEMPORAL_TLS_CA_FILE"),
        ({"temporal_tls_client_cert_file": "ccert"}, "ENISHI_TEMPORAL_TLS_CLIENT_KEY_FILE"),
        ({"temporal_tls_client_key_file": "ckey"}, "ENISHI_TEMPORAL_TLS_CLIENT_CERT_FILE"),
        (
            {"temporal_tls_client_cert_file": "ccert", "temporal_tls_client_key_file": "skey"},
            "ENISHI_TEMPORAL_TLS_CLIENT_KEY_FILE",
        ),
    ],
)
async def test_unusable_tls_files_are_refused_naming_the_variable(
    pki: Pki, files: dict[str, str], env_var: str
) -> None:
    folder = pki.ca.parent
    (folder / "not-pem").write_text("just text")
    values = {field: folder / name for field, name in files.items()}

    with pytest.raises(ConfigurationError) as caught:
        await temporal.connect(settings(**values), lazy=True)

    assert caught.value.env_var == env_var
    assert env_var in str(caught.value)


async def test_connect_applies_namespace_api_key_and_tls(pki: Pki) -> None:
    client = await temporal.connect(
        settings(
            temporal_namespace="shop.a1b2c",
            temporal_api_key=SecretStr("cloud-key"),
            temporal_tls_ca_file=pki.ca,
        ),
        lazy=True,
    )

    config = client.service_client.config
    assert (config.target_host, client.namespace) == ("temporal.example:7233", "shop.a1b2c")
    assert config.api_key == "cloud-key"
    assert config.tls == TLSConfig(server_root_ca_cert=pki.ca.read_bytes())
    assert config.lazy


async def test_without_an_api_key_none_is_sent() -> None:
    client = await temporal.connect(settings(), lazy=True)

    assert client.service_client.config.api_key is None
    assert client.service_client.config.tls is False


async def test_the_tracing_interceptor_goes_on_the_client_only_when_tracing_is_on() -> None:
    with traced():
        traced_client = await temporal.connect(settings(), lazy=True)
    plain_client = await temporal.connect(settings(), lazy=True)

    [interceptor] = traced_client.config()["interceptors"]
    assert isinstance(interceptor, TracingInterceptor)
    assert list(plain_client.config()["interceptors"]) == []


async def test_a_service_with_an_unreadable_temporal_ca_exits_2_with_one_line(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "temporal-ca.pem"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.registry",
        env={
            **os.environ,
            "ENISHI_METRICS_PORT": "0",
            "ENISHI_GRPC_PORT": "0",
            "ENISHI_LOG_FORMAT": "json",
            "ENISHI_AUTH_DISABLED": "true",
            "ENISHI_TEMPORAL_TLS_CA_FILE": str(missing),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 2
    (failure,) = [
        r for r in map(json.loads, stdout.splitlines()) if r["event"] == "process.cannot_start"
    ]
    assert failure["env_var"] == "ENISHI_TEMPORAL_TLS_CA_FILE"
    assert failure["reason"].startswith(f"ENISHI_TEMPORAL_TLS_CA_FILE: cannot read {missing}")
    assert b"Traceback" not in stdout + stderr
