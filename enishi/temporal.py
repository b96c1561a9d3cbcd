"""Temporal set-up shared by the local stack, the tests and the simulator."""

from __future__ import annotations

from typing import Final

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from workflows.contract import SEARCH_ATTRIBUTES

_INDEXED: Final = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


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
