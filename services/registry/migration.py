"""Migration plans: where the enrollments waiting at each old step would land, and who is blocked.

Pure: the two versions, the step map and the counts per step in, the `MigrationPlan` out.
Semantics (docs/registry.md): an enrollment can move only from a safe point (a `wait` or
`wait_for` step), to a step that exists in the target version; old steps whose id exists in
the target version map to themselves unless the map says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from enishi.errors import FieldError, field_path
from enishi.journeys.model import Journey, WaitForStep, WaitStep
from enishi.v1 import journey_pb2
from services.registry.enrollments import UNKNOWN_STEP


def check_step_map(old: Journey, old_version: int, step_map: Mapping[str, str]) -> list[FieldError]:
    """Mistakes in the map itself: a key that is not a step of the old version, an empty value."""
    errors = []
    for source, target in sorted(step_map.items()):
        where = field_path("step_map", source) if source else "step_map"
        if source not in old.steps_by_id:
            errors.append(FieldError(where, f"'{source}' is not a step of version {old_version}"))
        elif not target:
            errors.append(FieldError(where, "empty target step"))
    return errors


def effective_map(old: Journey, new: Journey, step_map: Mapping[str, str]) -> dict[str, str]:
    """Old step → new step: same ids by default, then the designer's map on top."""
    mapping = {s.id: s.id for s in old.steps if s.id in new.steps_by_id}
    mapping.update(step_map)
    return mapping


def is_safe_point(journey: Journey, step_id: str) -> bool:
    """A step where an enrollment sits waiting, so it can move between versions."""
    step = journey.steps_by_id.get(step_id)
    return isinstance(step, WaitStep | WaitForStep)


def plan(
    journey_id: str,
    old: Journey,
    from_version: int,
    new: Journey,
    to_version: int,
    step_map: Mapping[str, str],
    counts: Mapping[str, int],
    computed_at: datetime,
) -> journey_pb2.MigrationPlan:
    """One row per old step with enrollments (definition order; unknown steps last)."""
    mapping = effective_map(old, new, step_map)
    result = journey_pb2.MigrationPlan(
        journey_id=journey_id, from_version=from_version, to_version=to_version
    )
    result.computed_at.FromDatetime(computed_at)
    order = list(dict.fromkeys(s.id for s in old.steps))
    others = sorted(k for k in counts if k not in old.steps_by_id)
    for step_id in [*order, *others]:
        waiting = counts.get(step_id, 0)
        if waiting <= 0:
            continue
        row = journey_pb2.MigrationPlanRow(from_step_id=step_id, enrollments=waiting)
        target = mapping.get(step_id, "")
        row.to_step_id = target
        if step_id == UNKNOWN_STEP:
            row.blocked_reason = "current step not reported (EnishiStep unset)"
        elif step_id not in old.steps_by_id:
            row.blocked_reason = f"step '{step_id}' is not in version {from_version}"
        elif not is_safe_point(old, step_id):
            row.blocked_reason = "not a wait step"
        elif not target:
            row.blocked_reason = "no mapping"
        elif target not in new.steps_by_id:
            row.blocked_reason = f"step '{target}' does not exist in version {to_version}"
        else:
            row.migratable = True
        result.rows.append(row)
        result.total_enrollments += waiting
        if row.migratable:
            result.migratable_enrollments += waiting
        else:
            result.blocked_enrollments += waiting
    return result
