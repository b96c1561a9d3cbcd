"""Temporal set-up: the one way services connect (`connect`), and the journey search attributes.

`connect` applies the namespace, TLS and mutual TLS (`ENISHI_TEMPORAL_TLS*`), the Temporal
Cloud API key and the tracing interceptor; every service's client comes from it (the local
stack's probes and supervisor, which only talk to the local dev server, connect directly).
"""

from __future__ import annotations

from typing import Final

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from enishi import tls, tracing
from enishi.config import CommonSettings
from workflows.contract import SEARCH_ATTRIBUTES

_INDEXED: Final = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


def tls_config(settings: CommonSettings) -> TLSConfig | bool:
    """What `Client.connect(tls=...)` gets: False for plaintext (the local default), True for
    TLS trusting the system's CAs, or a `TLSConfig` with the CA and client certificate files.

    A CA file, a client certificate or an API key implies TLS (a key must never travel in
    the clear). A file that cannot be used raises `ConfigurationError` naming the variable.
    """
    ca = tls.read_ca(settings, "temporal_tls_ca_file")
    pair = tls.read_pair(settings, "temporal_tls_client_cert_file", "temporal_tls_client_key_file")
    if ca is None and pair is None:
        return settings.temporal_tls or bool(settings.temporal_api_key.get_secret_value())
    key, cert = pair if pair is not None else (None, None)
    return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key)


async def connect(settings: CommonSettings, *, lazy: bool = False) -> Client:
    """A client of `settings`' Temporal namespace, with TLS, API key and tracing applied.

    `lazy` defers connecting to the first call (a service that must start while Temporal is
    away); settings are still checked here. Tracing's interceptor goes on the client only,
    so a worker built on it is covered once (`enishi.tracing.temporal_interceptors`).
    """
    api_key = settings.temporal_api_key.get_secret_value()
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key or None,
        tls=tls_config(settings),
        interceptors=tracing.temporal_interceptors(),
        lazy=lazy,
    )


async def register_search_attributes(client: Client) -> None:
    """Make sure the journey search attributes exist in the client's namespace (idempotent).

    One call per attribute, "already exists" being fine: the time-skipping test server has
    AddSearchAttributes but not ListSearchAttributes, and a dev server's SQLite file made
    before an attribute was added to the contract lacks it.
    """
    for name, kind in SEARCH_ATTRIBUTES.items():
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace, search_attributes={name: _INDEXED[kind]}
                )
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
