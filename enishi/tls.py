"""TLS for gRPC: server and channel credentials from PEM files named by settings.

Off unless configured: a server serves TLS when it has `ENISHI_GRPC_TLS_CERT_FILE` and
`ENISHI_GRPC_TLS_KEY_FILE` (mutual TLS with `ENISHI_GRPC_TLS_CLIENT_CA_FILE`); a client
talks TLS with `ENISHI_GRPC_TLS=true` or a CA file. A file that cannot be read stops the
process with the variable to fix (docs/security.md). `read_ca` and `read_pair` read the PEM
files of Kafka's and Temporal's TLS settings too (`enishi.kafka`, `enishi.temporal`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
from pydantic_settings import BaseSettings

from enishi.config import GrpcClientSettings, GrpcServiceSettings, env_var
from enishi.errors import ConfigurationError


def _read(settings: BaseSettings, field: str) -> bytes | None:
    path: Path | None = getattr(settings, field)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            env_var(settings, field), f"{env_var(settings, field)}: cannot read {path}: {exc}"
        ) from None
    if b"-----BEGIN " not in data:
        raise ConfigurationError(
            env_var(settings, field), f"{env_var(settings, field)}: {path} is not a PEM file"
        )
    return data


def read_ca(settings: BaseSettings, field: str) -> bytes | None:
    """The CA bundle `field` names, checked to be usable; None when unset."""
    data = _read(settings, field)
    if data is not None:
        try:
            ssl.create_default_context().load_verify_locations(cadata=data.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigurationError(
                env_var(settings, field),
                f"{env_var(settings, field)}: not a usable CA bundle ({exc.__class__.__name__})",
            ) from None
    return data


def read_pair(
    settings: BaseSettings, cert_field: str, key_field: str
) -> tuple[bytes, bytes] | None:
    """(key, certificate chain) from two fields set together, checked to fit; None when unset."""
    cert, key = _read(settings, cert_field), _read(settings, key_field)
    if (cert is None) != (key is None):
        missing = key_field if key is None else cert_field
        raise ConfigurationError(
            env_var(settings, missing),
            f"{env_var(settings, cert_field)} and {env_var(settings, key_field)} go together: "
            f"set {env_var(settings, missing)} too",
        )
    if key is None or cert is None:
        return None
    # grpc reports a key that does not fit its certificate only as a failed bind; ask
    # Python's ssl first, for an error that names the files.
    try:
        ssl.create_default_context().load_cert_chain(
            getattr(settings, cert_field), getattr(settings, key_field)
        )
    except ssl.SSLError as exc:
        raise ConfigurationError(
            env_var(settings, key_field),
            f"{env_var(settings, cert_field)} / {env_var(settings, key_field)}: "
            f"not a certificate and its private key ({exc.reason or exc.__class__.__name__})",
        ) from None
    return key, cert


def server_credentials(settings: GrpcServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server, or None to serve plaintext (the local default)."""
    pair = read_pair(settings, "grpc_tls_cert_file", "grpc_tls_key_file")
    client_ca = read_ca(settings, "grpc_tls_client_ca_file")
    if pair is None:
        if client_ca is not None:
            raise ConfigurationError(
                env_var(settings, "grpc_tls_client_ca_file"),
                f"{env_var(settings, 'grpc_tls_client_ca_file')} needs "
                f"{env_var(settings, 'grpc_tls_cert_file')} and "
                f"{env_var(settings, 'grpc_tls_key_file')}: mutual TLS is TLS first",
            )
        return None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(settings: GrpcClientSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials for a client channel, or None for plaintext (the local default)."""
    ca = read_ca(settings, "grpc_tls_ca_file")
    pair = read_pair(settings, "grpc_tls_client_cert_file", "grpc_tls_client_key_file")
    if not (settings.grpc_tls or ca is not None or pair is not None):
        return None
    key, cert = pair if pair is not None else (None, None)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
