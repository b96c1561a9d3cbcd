"""`enishi.kafka.client_options`: TLS and SASL settings turned into aiokafka's arguments,
checked before any connection, and given to every Kafka client enishi makes."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from enishi import kafka
from enishi.channels.consumer import consumer_for as channel_consumer_for
from enishi.config import ChannelSettings, CommonSettings
from enishi.errors import ConfigurationError
from services.stream.app import consumer_for as stream_consumer_for
from tests.tls_support import Pki, issue_pki

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield issue_pki(tmp_path_factory.mktemp("kafka-pki"))


def settings(**values: Any) -> CommonSettings:
    return CommonSettings(kafka_bootstrap="broker.example:9093", **values)


def sasl(protocol: str, **values: Any) -> CommonSettings:
    return settings(
        kafka_security_protocol=protocol,
        kafka_sasl_username="enishi",
        kafka_sasl_password=SecretStr("s3cret-pass"),
        **values,
    )


def test_plaintext_is_the_default_and_adds_nothing_else() -> None:
    assert kafka.client_options(settings()) == {"security_protocol": "PLAINTEXT"}


def test_ssl_without_a_ca_file_verifies_brokers_against_the_system_cas() -> None:
    options = kafka.client_options(settings(kafka_security_protocol="SSL"))

    assert options.keys() == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_ssl_with_a_ca_file_trusts_that_ca(pki: Pki) -> None:
    options = kafka.client_options(
        settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca)
    )

    issuers = [
        dict(entry[0] for entry in ca["subject"]) for ca in options["ssl_context"].get_ca_certs()
    ]
    assert any("trustme" in str(issuer) for issuer in issuers)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_the_tls_context_is_built_once_and_shared_by_every_client(pki: Pki) -> None:
    one = settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca)
    other = settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca)

    assert kafka.client_options(one)["ssl_context"] is kafka.client_options(other)["ssl_context"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_carries_the_mechanism_and_credentials_over_tls(pki: Pki, mechanism: str) -> None:
    options = kafka.client_options(
        sasl("SASL_SSL", kafka_sasl_mechanism=mechanism, kafka_ssl_ca_file=pki.ca)
    )

    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "enishi",
        "sasl_plain_password": "s3cret-pass",
    }


def test_sasl_plaintext_has_credentials_and_no_tls() -> None:
    options = kafka.client_options(sasl("SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512"))

    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "enishi",
        "sasl_plain_password": "s3cret-pass",
    }


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize(
    ("missing", "env_var"),
    [
        ("kafka_sasl_password", "ENISHI_KAFKA_SASL_PASSWORD"),
        ("kafka_sasl_username", "ENISHI_KAFKA_SASL_USERNAME"),
    ],
)
def test_sasl_without_a_user_or_password_is_refused_naming_it(
    protocol: str, missing: str, env_var: str
) -> None:
    values: dict[str, Any] = {
        "kafka_sasl_username": "enishi",
        "kafka_sasl_password": SecretStr("s3cret-pass"),
    }
    values.pop(missing)

    with pytest.raises(ConfigurationError) as caught:
        kafka.client_options(settings(kafka_security_protocol=protocol, **values))

    assert caught.value.env_var == env_var
    assert (
        str(caught.value) == f"{env_var}: required with ENISHI_KAFKA_SECURITY_PROTOCOL={protocol}"
    )


@pytest.mark.parametrize(
    ("files", "env_var"),
    [
        ({"kafka_ssl_ca_file": "missing.pem"}, "ENISHI_KAFKA_SSL_CA_FILE"),
        ({"kafka_ssl_ca_file": "not-pem"}, "ENISHI_KAFKA_SSL_CA_FILE"),
        ({"kafka_ssl_client_cert_file": "ccert"}, "ENISHI_KAFKA_SSL_CLIENT_KEY_FILE"),
        ({"kafka_ssl_client_key_file": "ckey"}, "ENISHI_KAFKA_SSL_CLIENT_CERT_FILE"),
        (
            {"kafka_ssl_client_cert_file": "ccert", "kafka_ssl_client_key_file": "skey"},
            "ENISHI_KAFKA_SSL_CLIENT_KEY_FILE",
        ),
    ],
)
def test_unusable_tls_files_are_refused_naming_the_variable(
    pki: Pki, files: dict[str, str], env_var: str
) -> None:
    folder = pki.ca.parent
    (folder / "not-pem").write_text("just text")
    values = {field: folder / name for field, name in files.items()}

    with pytest.raises(ConfigurationError) as caught:
        kafka.client_options(settings(kafka_security_protocol="SASL_SSL", **values))

    assert caught.value.env_var == env_var
    assert env_var in str(caught.value)


@pytest.mark.parametrize(
    ("protocol", "values", "named"),
    [
        ("PLAINTEXT", {"kafka_ssl_ca_file": "ca"}, "ENISHI_KAFKA_SSL_CA_FILE"),
        ("SASL_PLAINTEXT", {"kafka_ssl_client_cert_file": "ccert"}, "ENISHI_KAFKA_SSL_CLIENT"),
        ("PLAINTEXT", {"kafka_sasl_username": "enishi"}, "ENISHI_KAFKA_SASL_USERNAME"),
        ("SSL", {"kafka_sasl_password": SecretStr("s3cret-pass")}, "ENISHI_KAFKA_SASL_PASSWORD"),
    ],
)
def test_settings_the_protocol_would_ignore_are_refused(
    pki: Pki, protocol: str, values: dict[str, Any], named: str
) -> None:
    resolved = {k: pki.ca.parent / v if k.endswith("_file") else v for k, v in values.items()}
    if protocol == "SASL_PLAINTEXT":
        resolved |= {"kafka_sasl_username": "enishi", "kafka_sasl_password": SecretStr("pw")}

    with pytest.raises(ConfigurationError) as caught:
        kafka.client_options(settings(kafka_security_protocol=protocol, **resolved))

    assert caught.value.env_var == "ENISHI_KAFKA_SECURITY_PROTOCOL"
    assert named in str(caught.value)
    assert f"ENISHI_KAFKA_SECURITY_PROTOCOL is {protocol}" in str(caught.value)


async def test_every_client_enishi_makes_gets_the_security_settings(pki: Pki) -> None:
    configured = ChannelSettings(
        kafka_bootstrap="broker.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_ca_file=pki.ca,
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="enishi",
        kafka_sasl_password=SecretStr("s3cret-pass"),
    )
    clients = {
        "producer": kafka.producer(configured),
        "stream consumer": stream_consumer_for(configured, "touchpoints", "g", batch_max=10),
        "channel consumer": channel_consumer_for(configured, "email"),
    }

    for name, client in clients.items():
        inner = client.client if hasattr(client, "client") else client._client
        assert inner._security_protocol == "SASL_SSL", name
        assert inner._sasl_mechanism == "SCRAM-SHA-512", name
        assert inner._sasl_plain_password == "s3cret-pass", name
        assert isinstance(inner._ssl_context, ssl.SSLContext), name


async def test_topic_creation_checks_the_settings_before_connecting(pki: Pki) -> None:
    unusable = settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca.parent / "gone")

    with pytest.raises(ConfigurationError) as caught:
        await kafka.ensure_topics(unusable, ["touchpoints"], partitions=1)

    assert caught.value.env_var == "ENISHI_KAFKA_SSL_CA_FILE"


async def test_a_service_with_a_missing_kafka_ca_file_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "kafka-ca.pem"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.stream",
        env={
            **os.environ,
            "ENISHI_METRICS_PORT": "0",
            "ENISHI_LOG_FORMAT": "json",
            "ENISHI_KAFKA_SECURITY_PROTOCOL": "SSL",
            "ENISHI_KAFKA_SSL_CA_FILE": str(missing),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 2
    (failure,) = [
        r for r in map(json.loads, stdout.splitlines()) if r["event"] == "process.cannot_start"
    ]
    assert failure["env_var"] == "ENISHI_KAFKA_SSL_CA_FILE"
    assert failure["reason"].startswith(f"ENISHI_KAFKA_SSL_CA_FILE: cannot read {missing}")
    assert b"Traceback" not in stdout + stderr
