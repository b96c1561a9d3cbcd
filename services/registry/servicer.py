"""`JourneyRegistry` handlers: check the request, apply the lifecycle rules, store, signal.

Domain errors (enishi.errors) become status codes in the shared interceptor; the one status
raised here directly is a rejected definition, whose diagnostics travel in the
`enishi.registry.DIAGNOSTICS_TRAILER` trailer. The semantics are in docs/registry.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import grpc
import structlog

from enishi import wire
from enishi.errors import FailedPrecondition, FieldError, InvalidArgument, NotFound, Unavailable
from enishi.grpc_server import REQUEST_ID_KEY, current_request_id
from enishi.journeys import Journey, JourneyInvalid, Severity, parse_journey, validate
from enishi.journeys.loader import load_source
from enishi.journeys.model import JOURNEY_ID_PATTERN
from enishi.registry import DIAGNOSTICS_TRAILER, TriggerEntry, trigger_entries
from enishi.v1 import journey_pb2
from enishi.v1 import journey_registry_pb2 as pb
from enishi.v1 import journey_registry_pb2_grpc as pb_grpc
from services.registry import lifecycle, migration, stats
from services.registry.enrollments import Enrollments
from services.registry.schedules import JourneySchedules, fires_by_time
from services.registry.store import JourneyState, JourneyStore, Status
from workflows.contract import MigrateSignal

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["JourneyRegistry"].full_name
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
COUNT_CONCURRENCY: Final = 16
# A transition retries when another replica changed the journey between read and write.
TRANSITION_ATTEMPTS: Final = 5
_JOURNEY_ID_RE: Final = re.compile(JOURNEY_ID_PATTERN)

Context = grpc.aio.ServicerContext[Any, Any]
_Response = TypeVar("_Response")

log = structlog.get_logger(__name__)


class DefinitionRejected(InvalidArgument):
    """A source with errors: INVALID_ARGUMENT, every diagnostic in the trailer."""

    def __init__(self, response: pb.ValidateJourneyResponse, diagnostics: JourneyInvalid) -> None:
        self.response = response
        # The request's field is `source`; the journey path inside it follows (or nothing,
        # for a YAML syntax error), then where in the text.
        super().__init__(
            FieldError(f"source.{e.field}" if e.field else "source", e.message)
            for e in diagnostics.errors
        )


def _handler(
    method: Callable[[Any, Any, Context], Awaitable[_Response]],
) -> Callable[[Any, Any, Context], Awaitable[_Response]]:
    """A rejected definition → INVALID_ARGUMENT with every diagnostic in its trailer."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> _Response:
        try:
            return await method(self, request, context)
        except DefinitionRejected as exc:
            trailer: list[tuple[str, str | bytes]] = [
                (DIAGNOSTICS_TRAILER, exc.response.SerializeToString())
            ]
            request_id = current_request_id()
            if request_id is not None:
                trailer.append((REQUEST_ID_KEY, request_id))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, str(exc), trailing_metadata=tuple(trailer)
            )

    return wrapper


# --- request checks --------------------------------------------------------------------------


def _journey_id(value: str, field: str = "journey_id") -> str:
    if not value:
        raise InvalidArgument.for_field(field, "required")
    if not _JOURNEY_ID_RE.fullmatch(value) or len(value) > 63:
        raise InvalidArgument.for_field(
            field, f"not a journey id (lower-case slug like 'f2-second-purchase'): {value!r}"
        )
    return value


def _version(value: int, field: str) -> int:
    if value <= 0:
        raise InvalidArgument.for_field(field, f"required: a version number >= 1, got {value}")
    return value


def _policy(value: int) -> int:
    if value not in (
        journey_pb2.RUNNING_ENROLLMENTS_POLICY_KEEP_RUNNING,
        journey_pb2.RUNNING_ENROLLMENTS_POLICY_CANCEL,
    ):
        raise InvalidArgument.for_field(
            "running_enrollments",
            "required: KEEP_RUNNING (running enrollments go on) or CANCEL (they are "
            "cancelled); there is no default",
        )
    return value


def _format(value: int, source: str) -> journey_pb2.DefinitionFormat.ValueType:
    """The declared format, or JSON when the source is a JSON object, else YAML."""
    try:
        is_json = isinstance(json.loads(source), dict)
    except ValueError:
        is_json = False
    if value == journey_pb2.DEFINITION_FORMAT_UNSPECIFIED:
        return journey_pb2.DEFINITION_FORMAT_JSON if is_json else journey_pb2.DEFINITION_FORMAT_YAML
    if value == journey_pb2.DEFINITION_FORMAT_JSON and not is_json:
        raise InvalidArgument.for_field("format", "JSON declared, but source is not a JSON object")
    if value not in (journey_pb2.DEFINITION_FORMAT_JSON, journey_pb2.DEFINITION_FORMAT_YAML):
        raise InvalidArgument.for_field("format", f"unknown format {value}")
    return value  # type: ignore[return-value]


def content_hash(source: str) -> str:
    """`sha256:` + hex SHA-256 of the UTF-8 source (JourneyDefinition.content_hash)."""
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()


def _source_id(source: str) -> str:
    """The source's `id` when it can be read, for diagnostics of an invalid source."""
    with contextlib.suppress(Exception):
        data = load_source(source).data
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            return str(data["id"])
    return ""


def _page_token(journey_id: str) -> str:
    return base64.urlsafe_b64encode(journey_id.encode()).decode()


def _after(token: str) -> str:
    if not token:
        return ""
    try:
        after = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        after = ""
    if not _JOURNEY_ID_RE.fullmatch(after):
        raise InvalidArgument.for_field("page_token", "not a token from a previous ListJourneys")
    return after


def _statuses(values: Iterable[int]) -> set[Status] | None:
    """The filter; None for all (empty, or UNSPECIFIED listed)."""
    wanted: set[Status] = set()
    for i, value in enumerate(values):
        if value == journey_pb2.JOURNEY_STATUS_UNSPECIFIED:
            return None
        try:
            wanted.add(Status.from_proto(value))
        except KeyError:
            raise InvalidArgument.for_field(f"statuses[{i}]", f"unknown status {value}") from None
    return wanted or None


def _summary(state: JourneyState, running: int) -> journey_pb2.JourneySummary:
    summary = journey_pb2.JourneySummary(
        journey_id=state.journey_id,
        name=state.name,
        status=state.status.to_proto(),
        live_version=state.live_version,
        latest_version=state.latest_version,
        designer=state.designer,
        running_enrollments=running,
    )
    summary.updated_at.FromDatetime(state.updated_at)
    return summary


def _version_info(
    definition: journey_pb2.JourneyDefinition, state: JourneyState, running: int
) -> journey_pb2.JourneyVersionInfo:
    info = journey_pb2.JourneyVersionInfo(
        journey_id=definition.journey_id,
        version=definition.version,
        name=definition.name,
        content_hash=definition.content_hash,
        designer=definition.designer,
        live=definition.version == state.live_version,
        running_enrollments=running,
    )
    info.created_at.CopyFrom(definition.created_at)
    activated = state.activated_at.get(definition.version)
    if activated is not None:
        info.activated_at.FromDatetime(activated)
    return info


class JourneyRegistryServicer(pb_grpc.JourneyRegistryServicer):
    """Journeys in Redis (`JourneyStore`); enrollments and schedules in Temporal."""

    def __init__(
        self,
        store: JourneyStore,
        enrollments: Enrollments,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        schedules: JourneySchedules | None = None,
    ) -> None:
        self._store = store
        self._enrollments = enrollments
        self._clock = clock
        self._schedules = schedules or JourneySchedules(enrollments.client)

    # --- shared steps ------------------------------------------------------------------------

    async def _state(self, journey_id: str) -> JourneyState:
        state = await self._store.state(journey_id)
        if state is None:
            raise NotFound(f"journey_id: no journey '{journey_id}' is registered")
        return state

    async def _definition(
        self, state: JourneyState, version: int, field: str
    ) -> journey_pb2.JourneyDefinition:
        definition = await self._store.definition(state.journey_id, version)
        if definition is None:
            raise NotFound(
                f"{field}: journey '{state.journey_id}' has no version {version} "
                f"(versions 1..{state.latest_version})"
            )
        return definition

    @staticmethod
    def _journey(definition: journey_pb2.JourneyDefinition) -> Journey:
        try:
            return parse_journey(definition.source)
        except JourneyInvalid as exc:
            # Registered valid; the language has become stricter since. Say so, do not guess.
            raise FailedPrecondition(
                f"version {definition.version} of '{definition.journey_id}' no longer "
                f"validates: {exc}; register a corrected version"
            ) from exc

    async def _live_entries(self, state: JourneyState, version: int) -> dict[str, TriggerEntry]:
        definition = await self._definition(state, version, "version")
        return trigger_entries(self._journey(definition), version)

    async def _transition(
        self,
        journey_id: str,
        decide: Callable[[JourneyState], Status],
        version: Callable[[JourneyState], int],
        *,
        publish: bool,
        reason: str | None = None,
    ) -> JourneyState:
        """Read, decide, write (index entries of `version` when `publish`, else none)."""
        for _ in range(TRANSITION_ATTEMPTS):
            state = await self._state(journey_id)
            status = decide(state)
            live = version(state)
            entries = await self._live_entries(state, live) if publish else {}
            changed = await self._store.transition(
                state, status, live_version=live, entries=entries, reason=reason
            )
            if changed is not None:
                log.info(
                    "registry.status_changed",
                    journey_id=journey_id,
                    status=changed.status.value,
                    live_version=changed.live_version,
                    trigger_fields=sorted(entries),
                    reason=reason,
                )
                return changed
        raise Unavailable(f"journey_id: '{journey_id}' kept changing concurrently; retry")

    async def _sync_schedule(self, state: JourneyState) -> None:
        """Bring the journey's Temporal Schedule in step with its status (after the index).

        Active: the live version's schedule (or condition sweep), created or replaced
        unpaused (none needed: deleted). Paused: paused. Archived: deleted. Journeys that
        never had a trigger that fires by time make no Temporal call.
        """
        try:
            if state.status is Status.ACTIVE:
                journey = self._journey(
                    await self._definition(state, state.live_version, "version")
                )
                if fires_by_time(journey):
                    await self._schedules.activate(journey, state.live_version)
                elif await self._ever_scheduled(state.journey_id):
                    await self._schedules.delete(state.journey_id)
            elif state.status is Status.PAUSED:
                if await self._ever_scheduled(state.journey_id):
                    await self._schedules.pause(state.journey_id, state.reason)
            elif state.status is Status.ARCHIVED and await self._ever_scheduled(state.journey_id):
                await self._schedules.delete(state.journey_id)
        except Unavailable as exc:
            raise Unavailable(
                f"journey '{state.journey_id}' is {state.status.value} (the trigger index says "
                f"so), but its schedule could not be brought in step: {exc}; repeat the call"
            ) from exc

    async def sync_schedules(self) -> int:
        """Bring every journey's Schedule in step with its status and this process's settings.

        Run at start: a changed `ENISHI_JOURNEY_CONDITION_SWEEP_MINUTES`, or a status change
        whose schedule call failed, reaches Temporal without anyone re-activating. Idempotent
        (every replica may run it); returns how many journeys were looked at.
        """
        states = await self._store.states(await self._store.journey_ids())
        for state in states:
            await self._sync_schedule(state)
        return len(states)

    async def _ever_scheduled(self, journey_id: str) -> bool:
        """Whether any version of the journey has a trigger that fires by time."""
        for definition in await self._store.definitions(journey_id):
            with contextlib.suppress(FailedPrecondition):
                if fires_by_time(self._journey(definition)):
                    return True
        return False

    async def _running(self, journey_ids: Iterable[str]) -> list[int]:
        limit = asyncio.Semaphore(COUNT_CONCURRENCY)

        async def one(journey_id: str) -> int:
            async with limit:
                return await self._enrollments.count(journey_id)

        return list(await asyncio.gather(*(one(j) for j in journey_ids)))

    async def _stop(
        self,
        request: pb.PauseJourneyRequest | pb.ArchiveJourneyRequest,
        decide: Callable[[JourneyState], Status],
        what: str,
    ) -> tuple[JourneyState, int]:
        """Pause or archive: out of the index, then (CANCEL) signal every running enrollment."""
        policy = _policy(request.running_enrollments)
        journey_id = _journey_id(request.journey_id)
        state = await self._transition(
            journey_id, decide, lambda s: s.live_version, publish=False, reason=request.reason
        )
        await self._sync_schedule(state)
        if policy != journey_pb2.RUNNING_ENROLLMENTS_POLICY_CANCEL:
            return state, 0
        try:
            result = await self._enrollments.cancel(journey_id, reason=what)
        except Unavailable as exc:
            raise Unavailable(
                f"journey '{journey_id}' is {what} (no new enrollments), but cancelling its "
                f"running enrollments failed: {exc}; repeat the call with CANCEL"
            ) from exc
        log.info(
            "registry.enrollments_cancelled",
            journey_id=journey_id,
            cancelled=result.delivered,
            already_ended=result.failed,
        )
        return state, result.delivered

    # --- handlers ----------------------------------------------------------------------------

    @_handler
    async def ValidateJourney(
        self, request: pb.ValidateJourneyRequest, context: Context
    ) -> pb.ValidateJourneyResponse:
        _format(request.format, request.source)
        result = validate(request.source)
        return pb.ValidateJourneyResponse(
            valid=result.ok,
            diagnostics=[d.to_proto() for d in result.diagnostics],
            journey_id=result.journey.id if result.journey else _source_id(request.source),
            content_hash=content_hash(request.source),
        )

    @_handler
    async def RegisterJourney(
        self, request: pb.RegisterJourneyRequest, context: Context
    ) -> pb.RegisterJourneyResponse:
        errors = []
        if not request.source.strip():
            errors.append(FieldError("source", "required: the journey's YAML or JSON text"))
        if not request.designer.strip():
            errors.append(FieldError("designer", "required: who registers this version"))
        if errors:
            raise InvalidArgument(errors)
        fmt = _format(request.format, request.source)
        result = validate(request.source)
        if result.journey is None or not result.ok:
            response = pb.ValidateJourneyResponse(
                valid=False,
                diagnostics=[d.to_proto() for d in result.diagnostics],
                journey_id=_source_id(request.source),
                content_hash=content_hash(request.source),
            )
            raise DefinitionRejected(response, JourneyInvalid(result.diagnostics))
        journey = result.journey
        definition = journey_pb2.JourneyDefinition(
            journey_id=journey.id,
            source=request.source,
            format=fmt,
            content_hash=content_hash(request.source),
            designer=request.designer.strip(),
            name=journey.name,
        )
        stored, created = await self._store.register(definition)
        state = await self._state(journey.id)
        log.info(
            "registry.registered",
            journey_id=journey.id,
            version=stored.version,
            created=created,
            content_hash=stored.content_hash,
        )
        return pb.RegisterJourneyResponse(
            version=_version_info(stored, state, 0),
            created=created,
            diagnostics=[
                d.to_proto() for d in result.diagnostics if d.severity is not Severity.ERROR
            ],
        )

    @_handler
    async def ActivateJourney(
        self, request: pb.ActivateJourneyRequest, context: Context
    ) -> pb.ActivateJourneyResponse:
        journey_id = _journey_id(request.journey_id)
        version = _version(request.version, "version")
        state = await self._transition(
            journey_id, lifecycle.activate, lambda _: version, publish=True
        )
        await self._sync_schedule(state)
        (running,) = await self._running([journey_id])
        return pb.ActivateJourneyResponse(journey=_summary(state, running))

    @_handler
    async def PauseJourney(
        self, request: pb.PauseJourneyRequest, context: Context
    ) -> pb.PauseJourneyResponse:
        state, cancelled = await self._stop(request, lifecycle.pause, "paused")
        (running,) = await self._running([state.journey_id])
        return pb.PauseJourneyResponse(
            journey=_summary(state, running), cancelled_enrollments=cancelled
        )

    @_handler
    async def ResumeJourney(
        self, request: pb.ResumeJourneyRequest, context: Context
    ) -> pb.ResumeJourneyResponse:
        journey_id = _journey_id(request.journey_id)
        state = await self._transition(
            journey_id, lifecycle.resume, lambda s: s.live_version, publish=True
        )
        await self._sync_schedule(state)
        (running,) = await self._running([journey_id])
        return pb.ResumeJourneyResponse(journey=_summary(state, running))

    @_handler
    async def ArchiveJourney(
        self, request: pb.ArchiveJourneyRequest, context: Context
    ) -> pb.ArchiveJourneyResponse:
        state, cancelled = await self._stop(request, lifecycle.archive, "archived")
        (running,) = await self._running([state.journey_id])
        return pb.ArchiveJourneyResponse(
            journey=_summary(state, running), cancelled_enrollments=cancelled
        )

    @_handler
    async def ListJourneys(
        self, request: pb.ListJourneysRequest, context: Context
    ) -> pb.ListJourneysResponse:
        if request.page_size < 0:
            raise InvalidArgument.for_field("page_size", f"must be >= 0, got {request.page_size}")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _after(request.page_token)
        wanted = _statuses(request.statuses)
        ids = [j for j in await self._store.journey_ids() if j > after]
        page: list[JourneyState] = []
        more = False
        # Read states a page at a time until the page is full (a filter may skip many).
        for start in range(0, len(ids), size):
            for state in await self._store.states(ids[start : start + size]):
                if wanted is not None and state.status not in wanted:
                    continue
                if len(page) == size:
                    more = True
                    break
                page.append(state)
            if more:
                break
        running = await self._running(s.journey_id for s in page)
        return pb.ListJourneysResponse(
            journeys=[_summary(s, n) for s, n in zip(page, running, strict=True)],
            next_page_token=_page_token(page[-1].journey_id) if more else "",
        )

    @_handler
    async def GetJourney(
        self, request: pb.GetJourneyRequest, context: Context
    ) -> pb.GetJourneyResponse:
        journey_id = _journey_id(request.journey_id)
        if request.version < 0:
            raise InvalidArgument.for_field("version", f"must be >= 0, got {request.version}")
        state = await self._state(journey_id)
        version = request.version or state.live_version
        if version == 0:
            raise NotFound(
                f"version: journey '{journey_id}' has no live version (it is "
                f"{state.status.value}); ask for a version (1..{state.latest_version})"
            )
        definition = await self._definition(state, version, "version")
        definitions = await self._store.definitions(journey_id)
        limit = asyncio.Semaphore(COUNT_CONCURRENCY)

        async def running(v: int | None) -> int:
            async with limit:
                return await self._enrollments.count(journey_id, v)

        total, *per_version = await asyncio.gather(
            running(None), *(running(d.version) for d in definitions)
        )
        return pb.GetJourneyResponse(
            definition=definition,
            journey=_summary(state, total),
            versions=[
                _version_info(d, state, n) for d, n in zip(definitions, per_version, strict=True)
            ],
        )

    async def _plan(
        self, request: pb.PlanMigrationRequest | pb.MigrateJourneyRequest
    ) -> tuple[dict[str, str], Callable[[], Awaitable[journey_pb2.MigrationPlan]]]:
        """Check the request; the full step map and the plan maker (it counts in Temporal)."""
        journey_id = _journey_id(request.journey_id)
        from_version = _version(request.from_version, "from_version")
        to_version = _version(request.to_version, "to_version")
        if from_version == to_version:
            raise InvalidArgument.for_field("to_version", "must differ from from_version")
        state = await self._state(journey_id)
        old = self._journey(await self._definition(state, from_version, "from_version"))
        new = self._journey(await self._definition(state, to_version, "to_version"))
        step_map = dict(request.step_map)
        errors = migration.check_step_map(old, from_version, step_map)
        if errors:
            raise InvalidArgument(errors)

        async def make() -> journey_pb2.MigrationPlan:
            counts = await self._enrollments.by_step(
                journey_id, from_version, [s.id for s in old.steps]
            )
            return migration.plan(
                journey_id, old, from_version, new, to_version, step_map, counts, self._clock()
            )

        return migration.effective_map(old, new, step_map), make

    @_handler
    async def PlanMigration(
        self, request: pb.PlanMigrationRequest, context: Context
    ) -> pb.PlanMigrationResponse:
        _, make = await self._plan(request)
        return pb.PlanMigrationResponse(plan=await make())

    @_handler
    async def MigrateJourney(
        self, request: pb.MigrateJourneyRequest, context: Context
    ) -> pb.MigrateJourneyResponse:
        mapping, make = await self._plan(request)
        try:
            plan = await make()
        except Unavailable as exc:
            raise FailedPrecondition(
                f"the migration plan cannot be computed ({exc}); nothing was migrated"
            ) from exc
        blocked = [r for r in plan.rows if not r.migratable]
        if blocked and not request.allow_partial:
            shown = "; ".join(
                f"{r.from_step_id or '(unknown step)'} ({r.enrollments}): {r.blocked_reason}"
                for r in blocked[:10]
            )
            raise FailedPrecondition(
                f"step_map: {plan.blocked_enrollments} enrollment(s) would be blocked: {shown}; "
                "fix the map, or set allow_partial to migrate the others; nothing was migrated"
            )
        steps = [r.from_step_id for r in plan.rows if r.migratable]
        signal = MigrateSignal(to_version=plan.to_version, step_map=mapping)
        result = await self._enrollments.migrate(plan.journey_id, plan.from_version, steps, signal)
        log.info(
            "registry.migrated",
            journey_id=plan.journey_id,
            from_version=plan.from_version,
            to_version=plan.to_version,
            signalled=result.delivered,
            failed=result.failed,
        )
        return pb.MigrateJourneyResponse(plan=plan, migrated=result.delivered, failed=result.failed)

    @_handler
    async def GetJourneyStats(
        self, request: pb.GetJourneyStatsRequest, context: Context
    ) -> pb.GetJourneyStatsResponse:
        journey_id = _journey_id(request.journey_id)
        if request.version < 0:
            raise InvalidArgument.for_field("version", f"must be >= 0, got {request.version}")
        state = await self._state(journey_id)
        if request.version:
            await self._definition(state, request.version, "version")
        definitions = await self._store.definitions(journey_id)
        # The counters live in the store's Redis (the stream processor writes them); the store
        # has no public client, and this handler is the only reader.
        counters = await self._store.stats_counters(journey_id)
        return pb.GetJourneyStatsResponse(
            stats=stats.build(
                journey_id, counters, stats.step_order(definitions), request.version, self._clock()
            )
        )


def add_to_server(servicer: JourneyRegistryServicer, server: grpc.aio.Server) -> list[str]:
    """Register the servicer; undecodable requests answer INVALID_ARGUMENT naming the field."""
    return [wire.register(server, pb.DESCRIPTOR.services_by_name["JourneyRegistry"], servicer)]
