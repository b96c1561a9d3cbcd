"""What the local stack's parts inherit from the shell that runs `enishi dev up`."""

from __future__ import annotations

from enishi.devstack.parts import inherited_env


def test_settings_for_remote_kafka_and_temporal_are_not_passed_to_the_local_stack() -> None:
    shell = {
        "PATH": "/usr/bin",
        "ENISHI_LOG_LEVEL": "DEBUG",
        "ENISHI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ENISHI_KAFKA_SSL_CA_FILE": "/etc/kafka/ca.pem",
        "ENISHI_KAFKA_SASL_PASSWORD": "hunter2",
        "ENISHI_TEMPORAL_TLS": "true",
        "ENISHI_TEMPORAL_TLS_CA_FILE": "/etc/temporal/ca.pem",
        "ENISHI_TEMPORAL_API_KEY": "cloud-key",
        "ENISHI_TEMPORAL_NAMESPACE": "prod.a1b2c",
    }

    assert inherited_env(shell) == {"PATH": "/usr/bin", "ENISHI_LOG_LEVEL": "DEBUG"}
