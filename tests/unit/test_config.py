"""Settings come from ENISHI_* variables, and the README's table says exactly what they are."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from enishi import config_table
from enishi.catalog import SERVICES, by_name
from enishi.config import DevStackSettings, IngestSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_table_is_generated_from_the_settings_classes() -> None:
    assert config_table.render() in README.read_text(), (
        "README.md's configuration table is stale: paste `python -m enishi.config_table`"
    )


def test_settings_read_enishi_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENISHI_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("ENISHI_GRPC_PORT", "6000")
    monkeypatch.setenv("ENISHI_KAFKA_IDEMPOTENCE", "true")
    settings = IngestSettings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.grpc_port == 6000
    assert settings.kafka_idempotence is True


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENISHI_DEV_KAFKA_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="kafka_port"):
        DevStackSettings()


def test_catalogue_ports_come_from_each_service_settings_and_do_not_clash() -> None:
    ports = [s.metrics_port for s in SERVICES] + [
        s.grpc_port for s in SERVICES if s.grpc_port is not None
    ]
    assert len(ports) == len(set(ports))
    assert by_name("ingest").grpc_port == IngestSettings.model_fields["grpc_port"].default
    with pytest.raises(KeyError, match="nope"):
        by_name("nope")
