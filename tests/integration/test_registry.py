"""JourneyRegistry over real gRPC, on the real Redis and Temporal dev server.

Running enrollments are stood in for by `FakeEnrollment`, a tiny workflow that upserts the
journey search attributes and ends on the registry's `cancel` or `migrate` signal, returning
what it received: the registry side of docs/journey-runtime.md, without the journey worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from enishi import grpc_client, keys
from enishi.config import RegistrySettings
from enishi.grpc_server import GrpcServer
from enishi.registry import DIAGNOSTICS_TRAILER, decode_entries
from enishi.v1 import journey_pb2
from enishi.v1 import journey_registry_pb2 as pb
from enishi.v1 import journey_registry_pb2_grpc as pb_grpc
from services.registry.enrollments import Enrollments
from services.registry.servicer import JourneyRegistryServicer, add_to_server
from services.registry.store import JourneyStore
from tests import auth_support
from tests.conftest import LocalServers
from workflows import contract

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEEP = journey_pb2.RUNNING_ENROLLMENTS_POLICY_KEEP_RUNNING
CANCEL = journey_pb2.RUNNING_ENROLLMENTS_POLICY_CANCEL
JOURNEY_ID = SearchAttributeKey.for_keyword("EnishiJourneyId")
JOURNEY_VERSION = SearchAttributeKey.for_int("EnishiJourneyVersion")
STEP = SearchAttributeKey.for_keyword("EnishiStep")
CUSTOMER_ID = SearchAttributeKey.for_keyword("EnishiCustomerId")


# --- a stand-in for the journey workflow -----------------------------------------------------


@dataclass(frozen=True)
class FakeInput:
    journey_id: str
    version: int
    step: str
    customer_id: str


@workflow.defn(name="RegistryTestEnrollment")
class FakeEnrollment:
    """Sits at `step` (as its search attributes say) until cancelled or migrated."""

    def __init__(self) -> None:
        self._received: list[str] = []

    @workflow.run
    async def run(self, enrollment: FakeInput) -> list[str]:
        workflow.upsert_search_attributes(
            [
                JOURNEY_ID.value_set(enrollment.journey_id),
                JOURNEY_VERSION.value_set(enrollment.version),
                STEP.value_set(enrollment.step),
                CUSTOMER_ID.value_set(enrollment.customer_id),
            ]
        )
        await workflow.wait_condition(lambda: bool(self._received))
        return self._received

    @workflow.signal(name=contract.SIGNAL_CANCEL)
    def cancel(self, signal: contract.CancelSignal) -> None:
        self._received.append(f"cancel:{signal.reason}")

    @workflow.signal(name=contract.SIGNAL_MIGRATE)
    def migrate(self, signal: contract.MigrateSignal) -> None:
        steps = ",".join(f"{k}>{v}" for k, v in sorted(signal.step_map.items()))
        self._received.append(f"migrate:{signal.to_version}:{steps}")


# --- fixtures -------------------------------------------------------------------------------


@dataclass
class Registry:
    stub: pb_grpc.JourneyRegistryAsyncStub
    target: str
    redis: aioredis.Redis
    temporal: Client
    task_queue: str

    async def enroll(
        self, journey_id: str, version: int, step: str, customers: int
    ) -> list[WorkflowHandle[Any, list[str]]]:
        """Start `customers` fake enrollments at `step`; wait until visibility lists them."""
        handles = []
        for i in range(customers):
            customer = f"c{i}-{uuid4().hex[:6]}"
            handles.append(
                await self.temporal.start_workflow(
                    FakeEnrollment.run,
                    FakeInput(journey_id, version, step, customer),
                    id=contract.workflow_id(journey_id, customer),
                    task_queue=self.task_queue,
                )
            )
        query = (
            f"EnishiJourneyId = '{journey_id}' AND EnishiStep = '{step}' "
            f"AND EnishiJourneyVersion = {version} AND ExecutionStatus = 'Running'"
        )
        await _eventually(lambda: self.temporal.count_workflows(query), customers)
        return handles


async def _eventually(count: Callable[[], Any], expected: int, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while (await count()).count != expected:
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_registry(servers: LocalServers) -> AsyncIterator[Registry]:
    """An in-process registry on the real Redis and Temporal, a worker for FakeEnrollment."""
    settings = RegistrySettings(
        redis_url=servers.redis_url,
        temporal_address=servers.temporal_address,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        api_keys=auth_support.SERVER_KEYS,
    )
    redis = aioredis.Redis.from_url(servers.redis_url)
    temporal = await Client.connect(servers.temporal_address)
    store = JourneyStore(redis)
    servicer = JourneyRegistryServicer(store, Enrollments(temporal))

    def add(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    server = GrpcServer(settings, "registry", add, ready=store.ping)
    task_queue = str(uuid4())
    await server.start()
    try:
        async with (
            Worker(
                temporal,
                task_queue=task_queue,
                workflows=[FakeEnrollment],
                workflow_runner=UnsandboxedWorkflowRunner(),
            ),
            grpc_client.aio_channel(f"127.0.0.1:{server.port}", auth_support.ADMIN) as channel,
        ):
            yield Registry(
                pb_grpc.JourneyRegistryStub(channel),
                f"127.0.0.1:{server.port}",
                redis,
                temporal,
                task_queue,
            )
    finally:
        await server.stop(0)
        await redis.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registry(servers: LocalServers) -> AsyncIterator[Registry]:
    async with running_registry(servers) as running:
        yield running


def new_id(stem: str = "j") -> str:
    """A journey id no other test uses (Redis and Temporal live for the whole session)."""
    return f"{stem}-{uuid4().hex[:10]}"


def source(journey_id: str, event: str = "order.completed", wait: str = "1d") -> str:
    return f"""\
id: {journey_id}
name: Journey {journey_id}
designer: tests
trigger: {{event: {event}, where: "customer.orders_count == 1"}}
reentry: {{policy: after, cooldown: 7d}}
holdout: 0.1
steps:
  - id: first_wait
    wait: {{for: {wait}}}
  - id: reply
    wait_for: {{event: message.replied, timeout: 3d}}
  - id: note
    update: {{set: {{asked: true}}}}
  - id: done
    exit: {{}}
"""


async def register(registry: Registry, text: str) -> pb.RegisterJourneyResponse:
    return await registry.stub.RegisterJourney(
        pb.RegisterJourneyRequest(source=text, designer="alice@example.com")
    )


async def index_of(registry: Registry, journey_id: str) -> dict[str, Any]:
    index = await registry.redis.hgetall(keys.TRIGGER_INDEX)
    found = {}
    for name, value in index.items():
        for entry in decode_entries(value):
            if entry.journey_id == journey_id:
                found[name.decode() if isinstance(name, bytes) else name] = entry
    return found


async def revision(registry: Registry) -> int:
    return int(await registry.redis.get(keys.TRIGGER_INDEX_REVISION) or 0)


async def registered_active(registry: Registry, journey_id: str, versions: int = 1) -> None:
    for v in range(versions):
        await register(registry, source(journey_id, wait=f"{v + 1}d"))
    await registry.stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=journey_id, version=1))


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


# --- register, versions, get, list ----------------------------------------------------------


async def test_versions_are_numbered_immutable_and_idempotent_on_content(
    registry: Registry,
) -> None:
    journey_id = new_id()
    first = await register(registry, source(journey_id))
    assert (first.created, first.version.version) == (True, 1)
    assert [d.code for d in first.diagnostics] == ["holdout-without-goal"]  # warnings kept
    again = await register(registry, source(journey_id))
    assert (again.created, again.version.version) == (False, 1)
    second = await register(registry, source(journey_id, wait="2d"))
    assert (second.created, second.version.version) == (True, 2)
    # The old content again is the old version, not a third one.
    back = await register(registry, source(journey_id))
    assert (back.created, back.version.version) == (False, 1)

    got = await registry.stub.GetJourney(pb.GetJourneyRequest(journey_id=journey_id, version=1))
    assert got.definition.source == source(journey_id)
    assert got.definition.designer == "alice@example.com"
    assert got.definition.content_hash.startswith("sha256:")
    assert got.definition.format == journey_pb2.DEFINITION_FORMAT_YAML
    assert [v.version for v in got.versions] == [1, 2]
    assert got.journey.status == journey_pb2.JOURNEY_STATUS_DRAFT
    assert got.journey.latest_version == 2


async def test_a_definition_with_errors_is_invalid_argument_with_every_diagnostic(
    registry: Registry,
) -> None:
    bad = source(new_id()).replace("timeout: 3d", "timeout: 0d").replace("for: 1d", "for: xx")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await register(registry, bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "steps[0].wait.for" in (caught.value.details() or "")
    trailer = dict(caught.value.trailing_metadata() or ())
    rejected = pb.ValidateJourneyResponse.FromString(trailer[DIAGNOSTICS_TRAILER])
    assert not rejected.valid
    assert {d.path for d in rejected.diagnostics} >= {
        "steps[0].wait.for",
        "steps[1].wait_for.timeout",
    }
    assert all(d.line > 0 for d in rejected.diagnostics)


async def test_register_requires_source_and_designer_naming_them(registry: Registry) -> None:
    code, details = await status_of(
        registry.stub.RegisterJourney(pb.RegisterJourneyRequest(source="", designer=""))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "source: required" in details and "designer: required" in details


async def test_validate_reports_without_storing(registry: Registry) -> None:
    journey_id = new_id()
    reply = await registry.stub.ValidateJourney(
        pb.ValidateJourneyRequest(source=source(journey_id))
    )
    assert reply.valid and reply.journey_id == journey_id
    assert not await registry.redis.sismember(keys.JOURNEY_IDS, journey_id)


async def test_get_names_the_field_it_cannot_find(registry: Registry) -> None:
    code, details = await status_of(
        registry.stub.GetJourney(pb.GetJourneyRequest(journey_id=new_id()))
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("journey_id:")
    journey_id = new_id()
    await register(registry, source(journey_id))
    code, details = await status_of(
        registry.stub.GetJourney(pb.GetJourneyRequest(journey_id=journey_id))
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("version:")
    assert "no live version" in details
    code, details = await status_of(
        registry.stub.GetJourney(pb.GetJourneyRequest(journey_id=journey_id, version=7))
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("version:")
    code, details = await status_of(
        registry.stub.GetJourney(pb.GetJourneyRequest(journey_id="Not An Id"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("journey_id:")


async def test_list_pages_through_journeys_in_id_order_and_filters_by_status(
    registry: Registry,
) -> None:
    stem = f"list{uuid4().hex[:6]}"
    ids = [f"{stem}-{i}" for i in range(5)]
    for journey_id in ids:
        await register(registry, source(journey_id))
    await registry.stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=ids[2], version=1))
    seen: list[str] = []
    token = ""
    while True:
        reply = await registry.stub.ListJourneys(
            pb.ListJourneysRequest(page_size=2, page_token=token)
        )
        assert len(reply.journeys) <= 2
        seen += [j.journey_id for j in reply.journeys]
        token = reply.next_page_token
        if not token:
            break
    assert [j for j in seen if j.startswith(stem)] == ids
    assert seen == sorted(seen)
    active = await registry.stub.ListJourneys(
        pb.ListJourneysRequest(statuses=[journey_pb2.JOURNEY_STATUS_ACTIVE], page_size=500)
    )
    assert ids[2] in [j.journey_id for j in active.journeys]
    assert not {ids[0], ids[1]} & {j.journey_id for j in active.journeys}
    code, details = await status_of(
        registry.stub.ListJourneys(pb.ListJourneysRequest(page_token="%%%"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token:")


# --- activation and the trigger index -------------------------------------------------------


async def test_activation_publishes_the_trigger_entry_and_bumps_the_revision(
    registry: Registry,
) -> None:
    journey_id = new_id()
    await register(registry, source(journey_id, event="cart.updated"))
    await register(registry, source(journey_id, event="order.completed", wait="2d"))
    before = await revision(registry)
    reply = await registry.stub.ActivateJourney(
        pb.ActivateJourneyRequest(journey_id=journey_id, version=1)
    )
    assert reply.journey.status == journey_pb2.JOURNEY_STATUS_ACTIVE
    assert reply.journey.live_version == 1
    assert await revision(registry) > before
    entries = await index_of(registry, journey_id)
    assert list(entries) == ["cart.updated"]
    entry = entries["cart.updated"]
    assert (entry.version, entry.where, entry.reentry) == (1, "customer.orders_count == 1", "after")
    assert (entry.cooldown_seconds, entry.holdout) == (7 * 86400, 0.1)

    # Version 2 triggers on another event: the old entry goes, the new one comes, together.
    before = await revision(registry)
    await registry.stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=journey_id, version=2))
    assert await revision(registry) == before + 1
    entries = await index_of(registry, journey_id)
    assert list(entries) == ["order.completed"] and entries["order.completed"].version == 2
    got = await registry.stub.GetJourney(pb.GetJourneyRequest(journey_id=journey_id))
    assert got.definition.version == 2
    assert [v.live for v in got.versions] == [False, True]
    assert all(v.HasField("activated_at") for v in got.versions)


async def test_activation_keeps_other_journeys_under_the_same_event(registry: Registry) -> None:
    a, b = new_id("a"), new_id("b")
    await registered_active(registry, a)
    await registered_active(registry, b)
    index = await registry.redis.hget(keys.TRIGGER_INDEX, "order.completed")
    assert index is not None
    assert {a, b} <= {e.journey_id for e in decode_entries(index)}


async def test_concurrent_registrations_and_activations_lose_nothing(
    registry: Registry,
) -> None:
    journey_id = new_id()
    replies = await asyncio.gather(
        *(register(registry, source(journey_id, wait=f"{n}d")) for n in range(1, 7))
    )
    assert sorted(r.version.version for r in replies) == [1, 2, 3, 4, 5, 6]
    others = [new_id("c") for _ in range(6)]
    for other in others:
        await register(registry, source(other, event="shared.event"))
    await asyncio.gather(
        *(
            registry.stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=o, version=1))
            for o in others
        )
    )
    index = await registry.redis.hget(keys.TRIGGER_INDEX, "shared.event")
    assert index is not None
    assert set(others) <= {e.journey_id for e in decode_entries(index)}


async def test_activate_names_a_missing_version_and_refuses_archived_journeys(
    registry: Registry,
) -> None:
    journey_id = new_id()
    await register(registry, source(journey_id))
    code, details = await status_of(
        registry.stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=journey_id, version=3))
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("version:")
    code, details = await status_of(
        registry.stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=journey_id))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("version:")
    await registry.stub.ArchiveJourney(
        pb.ArchiveJourneyRequest(journey_id=journey_id, running_enrollments=KEEP)
    )
    code, details = await status_of(
        registry.stub.ActivateJourney(pb.ActivateJourneyRequest(journey_id=journey_id, version=1))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "archived" in details
    code, _ = await status_of(register(registry, source(journey_id, wait="9d")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


# --- pause, resume, archive -----------------------------------------------------------------


async def test_pause_requires_a_policy_naming_it(registry: Registry) -> None:
    journey_id = new_id()
    await registered_active(registry, journey_id)
    code, details = await status_of(
        registry.stub.PauseJourney(pb.PauseJourneyRequest(journey_id=journey_id))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("running_enrollments: required")
    assert await index_of(registry, journey_id)  # nothing changed


async def test_pause_removes_the_entries_and_resume_restores_them(registry: Registry) -> None:
    journey_id = new_id()
    await registered_active(registry, journey_id)
    before = await revision(registry)
    paused = await registry.stub.PauseJourney(
        pb.PauseJourneyRequest(journey_id=journey_id, running_enrollments=KEEP, reason="typo")
    )
    assert paused.journey.status == journey_pb2.JOURNEY_STATUS_PAUSED
    assert paused.cancelled_enrollments == 0
    assert await index_of(registry, journey_id) == {}
    assert await revision(registry) == before + 1
    resumed = await registry.stub.ResumeJourney(pb.ResumeJourneyRequest(journey_id=journey_id))
    assert resumed.journey.status == journey_pb2.JOURNEY_STATUS_ACTIVE
    assert list(await index_of(registry, journey_id)) == ["order.completed"]


async def test_pause_keep_running_leaves_enrollments_alone(registry: Registry) -> None:
    journey_id = new_id()
    await registered_active(registry, journey_id)
    handles = await registry.enroll(journey_id, 1, "first_wait", 2)
    paused = await registry.stub.PauseJourney(
        pb.PauseJourneyRequest(journey_id=journey_id, running_enrollments=KEEP)
    )
    assert paused.journey.running_enrollments == 2
    for handle in handles:
        assert (await handle.describe()).status is not None
        await handle.signal(contract.SIGNAL_CANCEL, contract.CancelSignal("test cleanup"))
        assert await handle.result() == ["cancel:test cleanup"]


async def test_pause_cancel_signals_every_running_enrollment(registry: Registry) -> None:
    journey_id = new_id()
    await registered_active(registry, journey_id, versions=2)
    handles = await registry.enroll(journey_id, 1, "first_wait", 3)
    handles += await registry.enroll(journey_id, 2, "reply", 1)
    other = await registry.enroll(new_id("other"), 1, "first_wait", 1)
    reply = await registry.stub.PauseJourney(
        pb.PauseJourneyRequest(journey_id=journey_id, running_enrollments=CANCEL)
    )
    assert reply.cancelled_enrollments == 4
    for handle in handles:
        assert await handle.result() == ["cancel:paused"]
    # Another journey's enrollment is not touched.
    await other[0].signal(contract.SIGNAL_CANCEL, contract.CancelSignal("cleanup"))
    assert await other[0].result() == ["cancel:cleanup"]


async def test_archive_cancel_is_final(registry: Registry) -> None:
    journey_id = new_id()
    await registered_active(registry, journey_id)
    handles = await registry.enroll(journey_id, 1, "reply", 1)
    reply = await registry.stub.ArchiveJourney(
        pb.ArchiveJourneyRequest(journey_id=journey_id, running_enrollments=CANCEL)
    )
    assert reply.journey.status == journey_pb2.JOURNEY_STATUS_ARCHIVED
    assert reply.cancelled_enrollments == 1
    assert await handles[0].result() == ["cancel:archived"]
    assert await index_of(registry, journey_id) == {}
    code, _ = await status_of(
        registry.stub.ResumeJourney(pb.ResumeJourneyRequest(journey_id=journey_id))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_draft_cannot_be_paused(registry: Registry) -> None:
    journey_id = new_id()
    await register(registry, source(journey_id))
    code, details = await status_of(
        registry.stub.PauseJourney(
            pb.PauseJourneyRequest(journey_id=journey_id, running_enrollments=KEEP)
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "never activated" in details


# --- migration ------------------------------------------------------------------------------


async def test_plan_counts_enrollments_per_step_and_reports_where_they_land(
    registry: Registry,
) -> None:
    journey_id = new_id()
    await registered_active(registry, journey_id, versions=2)
    handles = await registry.enroll(journey_id, 1, "first_wait", 3)
    handles += await registry.enroll(journey_id, 1, "reply", 2)
    handles += await registry.enroll(journey_id, 1, "note", 1)
    handles += await registry.enroll(journey_id, 2, "first_wait", 1)  # other version: not counted
    plan = (
        await registry.stub.PlanMigration(
            pb.PlanMigrationRequest(journey_id=journey_id, from_version=1, to_version=2)
        )
    ).plan
    rows = [(r.from_step_id, r.enrollments, r.to_step_id, r.migratable) for r in plan.rows]
    assert rows == [
        ("first_wait", 3, "first_wait", True),
        ("reply", 2, "reply", True),
        ("note", 1, "note", False),
    ]
    assert plan.rows[2].blocked_reason == "not a wait step"
    assert (plan.total_enrollments, plan.migratable_enrollments, plan.blocked_enrollments) == (
        6,
        5,
        1,
    )

    # Blocked enrollments refuse the migration unless partial is allowed.
    code, details = await status_of(
        registry.stub.MigrateJourney(
            pb.MigrateJourneyRequest(journey_id=journey_id, from_version=1, to_version=2)
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "note (1): not a wait step" in details

    done = await registry.stub.MigrateJourney(
        pb.MigrateJourneyRequest(
            journey_id=journey_id,
            from_version=1,
            to_version=2,
            step_map={"reply": "reply"},
            allow_partial=True,
        )
    )
    assert (done.migrated, done.failed) == (5, 0)
    results = [await h.result() for h in handles[:5]]
    assert all(r[0].startswith("migrate:2:") for r in results)
    assert "first_wait>first_wait" in results[0][0]
    for handle in handles[5:]:  # left alone: cancel to clean up
        await handle.signal(contract.SIGNAL_CANCEL, contract.CancelSignal("cleanup"))


async def test_plan_requests_name_the_bad_field(registry: Registry) -> None:
    journey_id = new_id()
    await registered_active(registry, journey_id, versions=2)
    cases = [
        (pb.PlanMigrationRequest(journey_id=journey_id, to_version=2), "from_version:"),
        (
            pb.PlanMigrationRequest(journey_id=journey_id, from_version=1, to_version=1),
            "to_version:",
        ),
        (
            pb.PlanMigrationRequest(
                journey_id=journey_id, from_version=1, to_version=2, step_map={"zzz": "reply"}
            ),
            "step_map.zzz:",
        ),
    ]
    for request, field in cases:
        code, details = await status_of(registry.stub.PlanMigration(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert details.startswith(field), details
    code, details = await status_of(
        registry.stub.PlanMigration(
            pb.PlanMigrationRequest(journey_id=journey_id, from_version=1, to_version=5)
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("to_version:")


async def test_health_and_stats_answer(registry: Registry) -> None:
    # Stats themselves: tests/integration/test_journey_stats.py.
    code, details = await status_of(
        registry.stub.GetJourneyStats(pb.GetJourneyStatsRequest(journey_id="x"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("journey_id:"), details
