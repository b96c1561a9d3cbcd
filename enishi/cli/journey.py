"""`enishi journey ...`: check journey sources like a compiler would, and drive the registry.

`validate` and `simulate` run locally; `register`, `activate`, `pause`, `resume`, `archive`,
`list`, `show`, `migrate` and `stats` call the JourneyRegistry (docs/registry.md) at `--target`
with `ENISHI_API_KEY` (a `designer` key to change journeys, `reader` to look; docs/security.md).
"""

from __future__ import annotations

import contextlib
import getpass
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar, cast

import grpc
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from enishi import grpc_client
from enishi.catalog import by_name
from enishi.config import DevStackSettings
from enishi.journeys import Diagnostic, Severity, validate
from enishi.registry import DIAGNOSTICS_TRAILER
from enishi.v1 import journey_pb2
from enishi.v1 import journey_registry_pb2 as registry_pb2
from enishi.v1 import journey_registry_pb2_grpc as registry_grpc

_R = TypeVar("_R")

app = typer.Typer(help="Write, check and run journeys.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_STYLES = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "blue"}


@app.command("validate")
def validate_command(
    files: Annotated[list[Path], typer.Argument(help="Journey sources (YAML or JSON).")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
) -> None:
    """Report every mistake as `file:line:col: severity: message (path)`; exit 1 on errors."""
    counts = dict.fromkeys(Severity, 0)
    for file in files:
        try:
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            err.print(f"{file}: [red]error[/red]: cannot read: {exc}", markup=True)
            counts[Severity.ERROR] += 1
            continue
        result = validate(source)
        for diagnostic in result.diagnostics:
            counts[diagnostic.severity] += 1
            line = diagnostic.format(str(file))
            out.print(line, style=_STYLES[diagnostic.severity], markup=False)
    errors, warnings = counts[Severity.ERROR], counts[Severity.WARNING]
    summary = f"{len(files)} file(s): {errors} error(s), {warnings} warning(s)"
    failed = errors > 0 or (strict and warnings > 0)
    err.print(summary, style="red" if failed else "green", markup=False)
    if failed:
        raise typer.Exit(1)


@app.command("simulate")
def simulate_command(
    file: Annotated[Path, typer.Argument(help="The journey source (YAML or JSON).")],
    customer: Annotated[
        Path, typer.Option("--customer", help="Customer fixture (examples/customers/*.yaml).")
    ],
    events: Annotated[
        Path | None,
        typer.Option("--events", help="Event script: start, trigger, events at offsets."),
    ] = None,
    horizon: Annotated[
        str | None, typer.Option("--horizon", help="How long to run, e.g. 30d (default 60d).")
    ] = None,
    holdout: Annotated[
        bool | None,
        typer.Option("--holdout/--no-holdout", help="Force the holdout group (default: hash)."),
    ] = None,
) -> None:
    """Run the journey on the time-skipping server for one customer and print what would be
    sent, on which channel, at which local time, and why (docs/journeys.md, "Simulation")."""
    import asyncio

    from workflows.simulation import (
        EventScript,
        SimulationError,
        load_customer,
        load_script,
        simulate,
    )

    try:
        source = file.read_text(encoding="utf-8")
        fixture = load_customer(customer.read_text(encoding="utf-8"), str(customer))
        script = load_script(events.read_text(encoding="utf-8"), str(events)) if events else None
    except (OSError, UnicodeDecodeError, SimulationError) as exc:
        err.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    result = validate(source)
    for diagnostic in result.diagnostics:
        if diagnostic.severity == Severity.ERROR:
            out.print(diagnostic.format(str(file)), style="red", markup=False)
    if not result.ok:
        err.print(f"{file}: not simulated: fix the errors first", style="red", markup=False)
        raise typer.Exit(1)
    overrides = {k: v for k, v in (("horizon", horizon), ("holdout", holdout)) if v is not None}
    script = (script or EventScript()).model_copy(update=overrides)
    try:
        report = asyncio.run(simulate(source, fixture, script))
    except SimulationError as exc:
        err.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    head = (
        f"{report.journey_id} for {report.customer_id} ({report.time_zone}), "
        f"from {report.local(report.start):%Y-%m-%d %a %H:%M} to "
        f"{report.local(report.horizon_end):%Y-%m-%d %a %H:%M}"
    )
    out.print(head, markup=False)
    if not report.enrolled:
        out.print(f"not enrolled: {report.not_enrolled_why}", style="yellow", markup=False)
        return
    if report.holdout:
        out.print("in the holdout group: nothing is sent", style="yellow", markup=False)
    for row in report.rows():
        out.print(f"{row.at:%m-%d %a %H:%M}  {row.step_id or '-':<16} {row.outcome}", markup=False)
        if row.content:
            out.print(f"{'':18}  {row.content}", markup=False)
        if row.why:
            out.print(f"{'':18}  why: {row.why}", style="dim", markup=False)
    if report.outcome is not None:
        ended = report.outcome
        because = f" ({ended.reason})" if ended.reason else ""
        out.print(f"ended: {ended.status}{because} at step {ended.last_step}", markup=False)
    else:
        out.print(f"still running at step {report.still_at} when the horizon ended", markup=False)
    out.print(f"{len(report.sent())} message(s) would be sent", markup=False)


# --- the registry: register, activate, pause, resume, archive, list, show, migrate ----------
# Each command is one or two JourneyRegistry calls (docs/registry.md) to --target.

REGISTRY_TARGET_ENV = "ENISHI_REGISTRY_TARGET"
CALL_TIMEOUT_SECONDS = 120.0  # pause/archive with CANCEL signal every running enrollment
_PROTO_SEVERITY = {
    journey_pb2.DIAGNOSTIC_SEVERITY_ERROR: Severity.ERROR,
    journey_pb2.DIAGNOSTIC_SEVERITY_WARNING: Severity.WARNING,
    journey_pb2.DIAGNOSTIC_SEVERITY_INFO: Severity.INFO,
}
_POLICIES = {
    "keep-running": journey_pb2.RUNNING_ENROLLMENTS_POLICY_KEEP_RUNNING,
    "cancel": journey_pb2.RUNNING_ENROLLMENTS_POLICY_CANCEL,
}
_STATUSES = {
    "draft": journey_pb2.JOURNEY_STATUS_DRAFT,
    "active": journey_pb2.JOURNEY_STATUS_ACTIVE,
    "paused": journey_pb2.JOURNEY_STATUS_PAUSED,
    "archived": journey_pb2.JOURNEY_STATUS_ARCHIVED,
}
_STATUS_NAMES = {v: k for k, v in _STATUSES.items()}

Target = Annotated[
    str | None,
    typer.Option(
        "--target",
        envvar=REGISTRY_TARGET_ENV,
        help="Registry host:port (default: localhost:50053 + ENISHI_DEV_SERVICE_PORT_OFFSET).",
        show_default=False,
    ),
]
JourneyIdArg = Annotated[str, typer.Argument(help="The journey id, e.g. f2-second-purchase.")]
PolicyOption = Annotated[
    str,
    typer.Option(
        "--policy",
        help="Running enrollments: keep-running (they go on) or cancel (they end now).",
        show_default=False,
    ),
]


def _target(value: str | None) -> str:
    if value:
        return value
    port = by_name("registry").grpc_port
    assert port is not None
    return f"localhost:{port + DevStackSettings().service_port_offset}"


@contextlib.contextmanager
def _registry(target: str | None) -> Iterator[tuple[registry_grpc.JourneyRegistryStub, str]]:
    address = _target(target)
    with grpc_client.channel(address) as channel:
        yield registry_grpc.JourneyRegistryStub(channel), address


def _call(address: str, method: Callable[..., _R], request: Any, filename: str = "") -> _R:
    """One unary call; a failure is printed (diagnostics compiler-style) and exits 1."""
    try:
        return method(request, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as exc:
        _fail(exc, address, filename)


def _fail(exc: grpc.RpcError, address: str, filename: str) -> NoReturn:
    call = cast(grpc.Call, exc)
    code, details = call.code(), call.details() or ""
    for key, value in call.trailing_metadata() or ():
        if key == DIAGNOSTICS_TRAILER and isinstance(value, bytes):
            rejected = registry_pb2.ValidateJourneyResponse.FromString(value)
            for diagnostic in rejected.diagnostics:
                _print_diagnostic(diagnostic, filename or "<source>")
            err.print(f"{filename or 'source'}: not registered", style="red", markup=False)
            raise typer.Exit(1)
    err.print(f"error: {code.name}: {details}", style="red", markup=False)
    hint = grpc_client.auth_hint(code)
    if hint:
        err.print(hint, markup=False)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        err.print(
            f"is the registry running at {address}? `enishi dev up --detach`, or set "
            f"--target / {REGISTRY_TARGET_ENV}",
            markup=False,
        )
    raise typer.Exit(1)


def _print_diagnostic(diagnostic: journey_pb2.Diagnostic, filename: str) -> None:
    severity = _PROTO_SEVERITY.get(diagnostic.severity, Severity.INFO)
    finding = Diagnostic(
        severity,
        diagnostic.code,
        diagnostic.message,
        diagnostic.path,
        diagnostic.line,
        diagnostic.column,
    )
    out.print(finding.format(filename), style=_STYLES[severity], markup=False)


def _when(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "—"
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _status(value: int) -> str:
    return _STATUS_NAMES.get(cast(Any, value), "unknown")


def _print_summary(summary: journey_pb2.JourneySummary, verb: str) -> None:
    live = f"v{summary.live_version}" if summary.live_version else "no live version"
    out.print(
        f"{summary.journey_id} {verb}: {_status(summary.status)}, {live} "
        f"(latest v{summary.latest_version}), {summary.running_enrollments} running "
        "enrollment(s)",
        markup=False,
    )


def _policy(value: str) -> journey_pb2.RunningEnrollmentsPolicy.ValueType:
    try:
        return _POLICIES[value]
    except KeyError:
        raise typer.BadParameter(
            f"{value!r}: choose keep-running or cancel", param_hint="--policy"
        ) from None


@app.command("register")
def register_command(
    file: Annotated[Path, typer.Argument(help="Journey source (YAML or JSON).")],
    activate: Annotated[
        bool, typer.Option("--activate", help="Make the registered version live.")
    ] = False,
    designer: Annotated[
        str | None,
        typer.Option(
            "--designer",
            envvar="ENISHI_DESIGNER",
            help="Who registers it (default: your login name).",
            show_default=False,
        ),
    ] = None,
    target: Target = None,
) -> None:
    """Store FILE as a new immutable version (the same content returns the existing one)."""
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"{file}: error: cannot read: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    request = registry_pb2.RegisterJourneyRequest(
        source=source, designer=designer or getpass.getuser()
    )
    with _registry(target) as (stub, address):
        reply = _call(address, stub.RegisterJourney, request, str(file))
        for diagnostic in reply.diagnostics:
            _print_diagnostic(diagnostic, str(file))
        info = reply.version
        if reply.created:
            out.print(
                f"{info.journey_id} v{info.version} registered ({info.content_hash[:19]})",
                markup=False,
            )
        else:
            out.print(
                f"{info.journey_id} v{info.version}: this content is already registered "
                "as that version; nothing new stored",
                markup=False,
            )
        if activate:
            activated = _call(
                address,
                stub.ActivateJourney,
                registry_pb2.ActivateJourneyRequest(
                    journey_id=info.journey_id, version=info.version
                ),
            )
            _print_summary(activated.journey, "activated")


@app.command("activate")
def activate_command(
    journey_id: JourneyIdArg,
    version: Annotated[int, typer.Option("--version", help="The version to make live.")],
    target: Target = None,
) -> None:
    """Make a version live: new enrollments use it; running ones stay on theirs."""
    with _registry(target) as (stub, address):
        reply = _call(
            address,
            stub.ActivateJourney,
            registry_pb2.ActivateJourneyRequest(journey_id=journey_id, version=version),
        )
    _print_summary(reply.journey, "activated")


@app.command("pause")
def pause_command(
    journey_id: JourneyIdArg,
    policy: PolicyOption,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")] = "",
    target: Target = None,
) -> None:
    """Stop new enrollments; running ones go on (keep-running) or end now (cancel)."""
    request = registry_pb2.PauseJourneyRequest(
        journey_id=journey_id, running_enrollments=_policy(policy), reason=reason
    )
    with _registry(target) as (stub, address):
        reply = _call(address, stub.PauseJourney, request)
    _print_summary(reply.journey, "paused")
    if policy == "cancel":
        out.print(f"cancelled {reply.cancelled_enrollments} running enrollment(s)", markup=False)


@app.command("resume")
def resume_command(journey_id: JourneyIdArg, target: Target = None) -> None:
    """Enroll again from new events only: nothing that fell due while paused is sent."""
    with _registry(target) as (stub, address):
        reply = _call(
            address, stub.ResumeJourney, registry_pb2.ResumeJourneyRequest(journey_id=journey_id)
        )
    _print_summary(reply.journey, "resumed")


@app.command("archive")
def archive_command(
    journey_id: JourneyIdArg,
    policy: PolicyOption,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")] = "",
    target: Target = None,
) -> None:
    """Retire a journey for good; running enrollments go on (keep-running) or end (cancel)."""
    request = registry_pb2.ArchiveJourneyRequest(
        journey_id=journey_id, running_enrollments=_policy(policy), reason=reason
    )
    with _registry(target) as (stub, address):
        reply = _call(address, stub.ArchiveJourney, request)
    _print_summary(reply.journey, "archived")
    if policy == "cancel":
        out.print(f"cancelled {reply.cancelled_enrollments} running enrollment(s)", markup=False)


@app.command("list")
def list_command(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only these statuses: draft, active, paused, archived."),
    ] = None,
    target: Target = None,
) -> None:
    """Every journey with its status, live and latest version and running enrollments."""
    wanted = []
    for name in status or ():
        if name not in _STATUSES:
            raise typer.BadParameter(
                f"{name!r}: choose from {', '.join(_STATUSES)}", param_hint="--status"
            )
        wanted.append(_STATUSES[name])
    table = Table("journey", "name", "status", "live", "latest", "running", "designer", "updated")
    token = ""
    with _registry(target) as (stub, address):
        while True:
            request = registry_pb2.ListJourneysRequest(
                page_size=200, page_token=token, statuses=wanted
            )
            reply = _call(address, stub.ListJourneys, request)
            for j in reply.journeys:
                table.add_row(
                    j.journey_id,
                    j.name,
                    _status(j.status),
                    f"v{j.live_version}" if j.live_version else "—",
                    f"v{j.latest_version}",
                    str(j.running_enrollments),
                    j.designer,
                    _when(j.updated_at),
                )
            token = reply.next_page_token
            if not token:
                break
    out.print(table)


@app.command("show")
def show_command(
    journey_id: JourneyIdArg,
    version: Annotated[
        int, typer.Option("--version", help="A version; 0 (default) for the live one.")
    ] = 0,
    source: Annotated[bool, typer.Option("--source", help="Print the source text too.")] = False,
    target: Target = None,
) -> None:
    """A journey: its status, every version, and one version's details (or source)."""
    with _registry(target) as (stub, address):
        reply = _call(
            address,
            stub.GetJourney,
            registry_pb2.GetJourneyRequest(journey_id=journey_id, version=version),
        )
    _print_summary(reply.journey, "is")
    table = Table(
        "version",
        "live",
        "name",
        "designer",
        "registered",
        "activated",
        "running",
        "content hash",
        title=f"{journey_id}: versions",
    )
    for v in reply.versions:
        table.add_row(
            f"v{v.version}",
            "●" if v.live else "",
            v.name,
            v.designer,
            _when(v.created_at),
            _when(v.activated_at),
            str(v.running_enrollments),
            v.content_hash[:19],
        )
    out.print(table)
    d = reply.definition
    out.print(f"showing v{d.version} ({d.name}), registered by {d.designer}", markup=False)
    if source:
        out.print(d.source, markup=False, highlight=False)


def _step_map(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise typer.BadParameter(f"{pair!r}: write old_step=new_step", param_hint="--map")
        mapping[old] = new
    return mapping


def _print_plan(plan: journey_pb2.MigrationPlan) -> None:
    table = Table(
        "step now",
        "waiting",
        "would land at",
        "migratable",
        "why not",
        title=f"{plan.journey_id}: v{plan.from_version} → v{plan.to_version}",
    )
    for row in plan.rows:
        table.add_row(
            row.from_step_id or "(unknown)",
            str(row.enrollments),
            row.to_step_id or "—",
            "yes" if row.migratable else "[red]no[/red]",
            row.blocked_reason,
        )
    out.print(table)
    out.print(
        f"{plan.total_enrollments} running on v{plan.from_version}: "
        f"{plan.migratable_enrollments} migratable, {plan.blocked_enrollments} blocked",
        markup=False,
    )


@app.command("migrate")
def migrate_command(
    journey_id: JourneyIdArg,
    from_version: Annotated[int, typer.Option("--from", help="The version enrollments run.")],
    to_version: Annotated[int, typer.Option("--to", help="The version to move them to.")],
    step_map: Annotated[
        list[str] | None,
        typer.Option("--map", help="old_step=new_step; repeat. Same ids map to themselves."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report who waits where and where they land.")
    ] = False,
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="Migrate the migratable, leave the blocked.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before migrating.")] = False,
    target: Target = None,
) -> None:
    """Move running enrollments to another version at their next wait; --dry-run reports."""
    mapping = _step_map(step_map or [])
    with _registry(target) as (stub, address):
        planned = _call(
            address,
            stub.PlanMigration,
            registry_pb2.PlanMigrationRequest(
                journey_id=journey_id,
                from_version=from_version,
                to_version=to_version,
                step_map=mapping,
            ),
        )
        _print_plan(planned.plan)
        if dry_run:
            return
        if not yes and not typer.confirm("migrate these enrollments?"):
            raise typer.Exit(1)
        reply = _call(
            address,
            stub.MigrateJourney,
            registry_pb2.MigrateJourneyRequest(
                journey_id=journey_id,
                from_version=from_version,
                to_version=to_version,
                step_map=mapping,
                allow_partial=allow_partial,
            ),
        )
    out.print(
        f"signalled {reply.migrated} enrollment(s) to move to v{to_version} at their next "
        f"wait; {reply.failed} had ended meanwhile",
        markup=False,
    )


# --- stats: the funnel per step, goal conversion per group, and the holdout lift --------------

# A two-proportion estimate is only worth printing when, at the pooled goal rate, each group
# expects at least this many conversions and this many non-conversions (the usual rule for the
# normal approximation); below it the interval is wide enough to say anything.
MIN_EXPECTED = 5
Z_95 = 1.959964
_GROUP_NAMES = {
    journey_pb2.ENROLLMENT_GROUP_TREATMENT: "treatment",
    journey_pb2.ENROLLMENT_GROUP_HOLDOUT: "holdout",
}


@dataclass(frozen=True)
class LiftEstimate:
    """Treatment goal rate minus holdout goal rate, with its 95% interval, or why not."""

    treatment: tuple[int, int]  # (converted, enrolled)
    holdout: tuple[int, int]
    lift: float | None = None  # None: not enough data (see `reason`)
    low: float = 0.0
    high: float = 0.0
    reason: str = ""


def lift_estimate(treatment: tuple[int, int], holdout: tuple[int, int]) -> LiftEstimate:
    """The lift of (converted, enrolled) pairs; `lift` None when the counts cannot carry it."""
    (t_goal, t_n), (h_goal, h_n) = treatment, holdout
    if h_n <= 0:
        reason = "no holdout enrollments (does the journey set `holdout`?)"
        return LiftEstimate(treatment, holdout, reason=reason)
    if t_n <= 0:
        return LiftEstimate(treatment, holdout, reason="no treatment enrollments")
    pooled = (t_goal + h_goal) / (t_n + h_n)
    expected = min(n * p for n in (t_n, h_n) for p in (pooled, 1 - pooled))
    if expected < MIN_EXPECTED:
        reason = (
            f"each group needs at least {MIN_EXPECTED} expected conversions and "
            f"non-conversions at the pooled rate {pooled:.1%}"
        )
        return LiftEstimate(treatment, holdout, reason=reason)
    t_rate, h_rate = t_goal / t_n, h_goal / h_n
    error = math.sqrt(t_rate * (1 - t_rate) / t_n + h_rate * (1 - h_rate) / h_n)
    lift = t_rate - h_rate
    return LiftEstimate(treatment, holdout, lift, lift - Z_95 * error, lift + Z_95 * error)


def describe_lift(estimate: LiftEstimate) -> str:
    """One line: the lift and its interval in points, and the counts it rests on."""
    (t_goal, t_n), (h_goal, h_n) = estimate.treatment, estimate.holdout
    counts = f"treatment {t_goal}/{t_n} converted, holdout {h_goal}/{h_n}"
    if estimate.lift is None:
        return f"lift: not enough data ({counts}): {estimate.reason}"
    verdict = "" if estimate.low > 0 or estimate.high < 0 else "; not distinguishable from 0"
    return (
        f"lift: {_points(estimate.lift)} (95% CI {_points(estimate.low)} to "
        f"{_points(estimate.high)}{verdict}) from {counts}"
    )


def _points(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def _rate(converted: int, enrolled: int) -> str:
    return f"{converted / enrolled:.1%}" if enrolled else "—"


@app.command("stats")
def stats_command(
    journey_id: JourneyIdArg,
    version: Annotated[
        int, typer.Option("--version", help="One version; 0 (default) for all of them.")
    ] = 0,
    target: Target = None,
) -> None:
    """Per step: entered, completed, exited, goal reached; goal rates per group and the lift."""
    with _registry(target) as (stub, address):
        reply = _call(
            address,
            stub.GetJourneyStats,
            registry_pb2.GetJourneyStatsRequest(journey_id=journey_id, version=version),
        )
    stats = reply.stats
    scope = f"v{version}" if version else "all versions"
    funnel = Table("version", "step", title=f"{journey_id}: steps ({scope})")
    for name in ("entered", "completed", "exited", "goal reached", "at step now"):
        funnel.add_column(name, justify="right")
    for step in stats.steps:
        funnel.add_row(
            f"v{step.version}",
            step.step_id,
            str(step.entered),
            str(step.completed),
            str(step.exited),
            str(step.goal_reached),
            str(step.waiting),
        )
    out.print(funnel)
    groups = Table("version", "group", title=f"{journey_id}: goal, by the version entered with")
    for name in ("enrolled", "converted", "goal rate"):
        groups.add_column(name, justify="right")
    totals: dict[int, tuple[int, int]] = {}
    for row in stats.groups:
        if row.version == version:  # the rows the lift is computed over
            totals[row.group] = (row.goal_reached, row.enrolled)
        groups.add_row(
            f"v{row.version}" if row.version else "all",
            _GROUP_NAMES.get(row.group, "unknown"),
            str(row.enrolled),
            str(row.goal_reached),
            _rate(row.goal_reached, row.enrolled),
        )
    out.print(groups)
    estimate = lift_estimate(
        totals.get(journey_pb2.ENROLLMENT_GROUP_TREATMENT, (0, 0)),
        totals.get(journey_pb2.ENROLLMENT_GROUP_HOLDOUT, (0, 0)),
    )
    out.print(describe_lift(estimate), markup=False)
    running = sum(step.waiting for step in stats.steps)
    if running:
        out.print(
            f"{running} enrollment(s) still running: their goal may still come, so the rates "
            "are lower bounds until their goal windows close",
            markup=False,
        )
    out.print(f"read at {_when(stats.computed_at)}", markup=False)
