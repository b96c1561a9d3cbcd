"""Whatever a designer's client sends, JourneyRegistry answers with a status that names the
field, never INTERNAL. Hypothesis builds random and boundary requests for every method and
sends them to a real in-process registry on the real Valkey and Temporal dev server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enishi import grpc_client
from enishi.v1 import journey_pb2
from enishi.v1 import journey_registry_pb2 as pb
from tests import auth_support
from tests.conftest import LocalServers
from tests.integration.test_registry import Registry, running_registry, source

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLES = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
# Answers a caller can act on; each names what is wrong (a field, or the journey's state).
EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
}
NAMES_A_FIELD = re.compile(r"^[a-z_]+(\[[^\]]*\]|\.[a-z_]+)*: |^\S+:\d+:\d+: |journey")

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "x" * 300, "\x00", "j-unknown", "a\u200bb", "Journey Id"]),
)
versions = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 0, 1, 2]))
policies = st.one_of(st.integers(-3, 5), st.sampled_from([0, 1, 2]))
step_maps = st.dictionaries(texts, texts, max_size=3)
sources = st.one_of(
    texts,
    st.sampled_from(["id: [", "steps: 3", "{}", "- a\n- b", "id: x\nsteps: []", "\t:"]),
    st.builds(lambda j: source(j), st.sampled_from(["bad id", "j" * 80, "ok-journey"])),
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registry(servers: LocalServers) -> AsyncIterator[Registry]:
    async with running_registry(servers) as running:
        yield running


async def _answer(call: Awaitable[Any]) -> None:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in EXPECTED, (exc.code(), exc.details())
        assert NAMES_A_FIELD.search(exc.details() or ""), exc.details()


@EXAMPLES
@given(source_text=sources, fmt=st.integers(-2, 4), designer=texts)
async def test_validate_and_register_answer_ok_or_a_named_problem(
    registry: Registry, source_text: str, fmt: int, designer: str
) -> None:
    stub = registry.stub
    fmt_value = journey_pb2.DefinitionFormat.ValueType(fmt)
    await _answer(
        stub.ValidateJourney(pb.ValidateJourneyRequest(source=source_text, format=fmt_value))
    )
    await _answer(
        stub.RegisterJourney(
            pb.RegisterJourneyRequest(source=source_text, format=fmt_value, designer=designer)
        )
    )


@EXAMPLES
@given(journey_id=texts, version=versions, policy=policies, reason=texts)
async def test_lifecycle_calls_answer_ok_or_a_named_problem(
    registry: Registry, journey_id: str, version: int, policy: int, reason: str
) -> None:
    stub = registry.stub
    await _answer(
        stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=journey_id, version=version))
    )
    policy_value = journey_pb2.RunningEnrollmentsPolicy.ValueType(policy)
    await _answer(
        stub.PauseJourney(
            pb.PauseJourneyRequest(
                journey_id=journey_id, running_enrollments=policy_value, reason=reason
            )
        )
    )
    await _answer(stub.ResumeJourney(pb.ResumeJourneyRequest(journey_id=journey_id)))
    await _answer(stub.GetJourney(pb.GetJourneyRequest(journey_id=journey_id, version=version)))
    await _answer(
        stub.GetJourneyStats(pb.GetJourneyStatsRequest(journey_id=journey_id, version=version))
    )


@EXAMPLES
@given(
    journey_id=texts,
    from_version=versions,
    to_version=versions,
    step_map=step_maps,
    partial=st.booleans(),
)
async def test_migration_calls_answer_ok_or_a_named_problem(
    registry: Registry,
    journey_id: str,
    from_version: int,
    to_version: int,
    step_map: dict[str, str],
    partial: bool,
) -> None:
    stub = registry.stub
    await _answer(
        stub.PlanMigration(
            pb.PlanMigrationRequest(
                journey_id=journey_id,
                from_version=from_version,
                to_version=to_version,
                step_map=step_map,
            )
        )
    )
    await _answer(
        stub.MigrateJourney(
            pb.MigrateJourneyRequest(
                journey_id=journey_id,
                from_version=from_version,
                to_version=to_version,
                step_map=step_map,
                allow_partial=partial,
            )
        )
    )


@EXAMPLES
@given(page_size=versions, page_token=texts, statuses=st.lists(st.integers(-2, 6), max_size=3))
async def test_list_answers_ok_or_a_named_problem(
    registry: Registry, page_size: int, page_token: str, statuses: list[int]
) -> None:
    await _answer(
        registry.stub.ListJourneys(
            pb.ListJourneysRequest(
                page_size=page_size,
                page_token=page_token,
                statuses=[journey_pb2.JourneyStatus.ValueType(s) for s in statuses],
            )
        )
    )


async def test_undecodable_bytes_name_the_field(registry: Registry) -> None:
    channel = grpc_client.aio_channel(registry.target, auth_support.ADMIN)
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/enishi.v1.JourneyRegistry/GetJourney"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"\x0a\x02\xff\xfe")  # journey_id (field 1): bytes that are not UTF-8
    await channel.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "journey_id: not valid UTF-8"
