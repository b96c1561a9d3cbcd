"""`enishi customer show|timeline|find IDENTITY`: the customer 360 view for operators.

An identity is `email:...`, `phone:...`, `line:...`, `anon:...`, `push:...`, `id:...` or a
bare customer id. The CLI talks to CustomerService at `--target` (or
`ENISHI_CUSTOMERS_TARGET`; default the local stack's port) with a `reader` key
(`ENISHI_API_KEY`, enishi/grpc_client.py). It is an operator tool: it shows
personal data (emails, phones) on purpose, and never logs them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC
from typing import Annotated, Any, Final, TypeVar

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, Group
from rich.table import Table

from enishi import grpc_client
from enishi.devstack.parts import local_target
from enishi.v1 import (
    channel_pb2,
    consent_pb2,
    customer_pb2,
    dispatch_pb2,
    identity_pb2,
    touchpoint_pb2,
)
from enishi.v1 import customer_service_pb2 as pb
from enishi.v1 import customer_service_pb2_grpc as pb_grpc

TARGET_ENV: Final = "ENISHI_CUSTOMERS_TARGET"
TIMEOUT_SECONDS: Final = 10.0
PREFIXES: Final = {
    "id": "customer_id",
    "email": "email",
    "phone": "phone",
    "line": "line_user_id",
    "anon": "anonymous_id",
    "push": "push_token",
}

app = typer.Typer(help="Look up customers: the 360 view and the timeline.", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

R = TypeVar("R", bound=Message)


def parse_identity(text: str) -> identity_pb2.CustomerRef:
    """`email:ann@example.com` -> CustomerRef(email=...); a bare value is a customer id."""
    prefix, sep, value = text.partition(":")
    if sep and prefix in PREFIXES:
        return identity_pb2.CustomerRef(**{PREFIXES[prefix]: value})
    return identity_pb2.CustomerRef(customer_id=text)


def default_target() -> str:
    """`ENISHI_CUSTOMERS_TARGET`, else the local stack's CustomerService port."""
    configured = os.environ.get(TARGET_ENV)
    if configured:
        return configured
    return local_target("customers")


def _call(target: str, method: Callable[[pb_grpc.CustomerServiceStub], R]) -> R:
    with grpc_client.channel(target) as channel:
        try:
            return method(pb_grpc.CustomerServiceStub(channel))
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code == grpc.StatusCode.NOT_FOUND:
                err.print(f"[red]not found:[/red] {details}")
            elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                err.print(
                    f"[red]error:[/red] CustomerService at {target} is unavailable ({details}). "
                    f"Is the stack up (`enishi dev up`)? Point elsewhere with --target or "
                    f"{TARGET_ENV}."
                )
            else:
                err.print(f"[red]error:[/red] {code.name if code else 'UNKNOWN'}: {details}")
                hint = grpc_client.auth_hint(code)
                if hint:
                    err.print(hint, markup=False)
            raise typer.Exit(1) from None


# -- rendering: pure functions from messages to rich tables ------------------------------


def _time(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    try:
        return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (ValueError, OverflowError):
        return f"{ts.seconds}s"


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _channel(value: int) -> str:
    try:
        return _enum(channel_pb2.Channel.Name(value), "CHANNEL_")  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def _json(value: Any) -> str:
    """JSON for people: protobuf Struct numbers are doubles, show 3200.0 as 3200."""

    def tidy(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer() and abs(item) < 2**53:
            return int(item)
        if isinstance(item, dict):
            return {k: tidy(v) for k, v in item.items()}
        if isinstance(item, list):
            return [tidy(v) for v in item]
        return item

    return json.dumps(tidy(value), ensure_ascii=False)


def _pairs(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value)
    return table


def profile_table(view: customer_pb2.Customer) -> Table:
    phase = _enum(customer_pb2.LifecyclePhase.Name(view.phase), "LIFECYCLE_PHASE_")
    traits = json_format.MessageToDict(view.traits)
    rows = [
        ("customer id", view.customer_id),
        ("phase", f"{phase} (since {_time(view.phase_changed_at)})"),
        ("engagement density", f"{view.engagement_density:g} / 30 days"),
        ("first seen", _time(view.created_at)),
        ("updated", _time(view.updated_at)),
    ]
    if view.merged_ids:
        rows.append(("merged ids", ", ".join(view.merged_ids)))
    if view.tags:
        rows.append(("tags", ", ".join(view.tags)))
    rows += [(f"trait {k}", _json(v)) for k, v in sorted(traits.items())]
    return _pairs("Profile", rows)


def identities_table(identity: identity_pb2.Identity) -> Table:
    rows = [
        (kind, getattr(identity, kind))
        for kind in ("customer_id", "email", "phone", "line_user_id", "anonymous_id")
        if getattr(identity, kind)
    ]
    for token in identity.push_tokens:
        platform = _enum(identity_pb2.PushPlatform.Name(token.platform), "PUSH_PLATFORM_")
        rows.append(
            (
                "push token",
                f"{token.token} ({platform}{', ' + token.app_id if token.app_id else ''})",
            )
        )
    return _pairs("Identities", rows)


def counters_table(counters: customer_pb2.Counters) -> Table:
    spent = f"{counters.total_spent:g} {counters.currency}".strip()
    rows = [
        ("orders", str(counters.orders_count)),
        ("total spent", spent),
        ("first order", _time(counters.first_order_at)),
        ("last order", _time(counters.last_order_at)),
        ("events", str(counters.events_count)),
        ("last seen", _time(counters.last_seen_at)),
        ("last contact", _time(counters.last_contact_at)),
        ("last message", _time(counters.last_message_at)),
    ]
    for sent in counters.messages:
        rows.append(
            (
                f"messages {_channel(sent.channel)}",
                f"{sent.last_24h} / 24h, {sent.last_7d} / 7d, {sent.total} total",
            )
        )
    return _pairs("Counters", rows)


def consents_table(view: customer_pb2.Customer) -> Table:
    table = Table(title="Consents and reachability", title_justify="left")
    for column in ("channel", "consent", "source", "changed", "reachable"):
        table.add_column(column)
    consents = {c.channel: c for c in view.consents}
    reach = {r.channel: r for r in view.reachability}
    for channel in sorted(set(consents) | set(reach)):
        consent = consents.get(channel)
        state = reach.get(channel)
        status = (
            _enum(consent_pb2.ConsentStatus.Name(consent.status), "CONSENT_STATUS_")
            if consent
            else "not recorded"
        )
        style = {"opted_in": "green", "opted_out": "red"}.get(status, "yellow")
        reachable = "-" if state is None else ("yes" if state.reachable else f"no ({state.reason})")
        table.add_row(
            _channel(channel),
            f"[{style}]{status}[/{style}]",
            consent.source if consent else "-",
            _time(consent.updated_at) if consent else "-",
            reachable,
        )
    return table


def preferences_table(prefs: consent_pb2.Preferences) -> Table:
    quiet = prefs.quiet_hours
    rows = [
        (
            "preferred channel",
            _channel(prefs.preferred_channel) if prefs.preferred_channel else "-",
        ),
        ("fallback", ", ".join(_channel(c) for c in prefs.fallback_channels) or "-"),
        ("locale", prefs.locale or "-"),
        ("time zone", prefs.time_zone or "-"),
        ("quiet hours", f"{quiet.start}-{quiet.end}" if quiet.start else "-"),
    ]
    return _pairs("Preferences", rows)


def journeys_table(view: customer_pb2.Customer) -> Table:
    table = Table(title="Active journeys", title_justify="left")
    for column in ("journey", "version", "step", "entered", "workflow"):
        table.add_column(column)
    for journey in view.active_journeys:
        table.add_row(
            journey.journey_id,
            str(journey.version or "-"),
            journey.current_step_id or "-",
            _time(journey.entered_at),
            journey.workflow_id,
        )
    return table


def why(entry: customer_pb2.TimelineEntry) -> str:
    """Who designed a message and why: journey v version / step, by designer."""
    reason = entry.reason
    if not reason.journey_id:
        return ""
    text = f"{reason.journey_id} v{reason.journey_version} / {reason.step_id}"
    if reason.variant:
        text += f" [{reason.variant}]"
    if reason.designer:
        text += f", by {reason.designer}"
    if reason.template_id:
        text += f", template {reason.template_id}"
    return text


def timeline_table(entries: Iterable[customer_pb2.TimelineEntry], title: str = "Timeline") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("when", "kind", "name", "via", "detail", "why"):
        table.add_column(column)
    for entry in entries:
        kind = _enum(touchpoint_pb2.TouchpointKind.Name(entry.kind), "TOUCHPOINT_KIND_")
        detail = entry.summary
        if not detail and entry.props.fields:
            detail = _json(json_format.MessageToDict(entry.props))
        if entry.status:
            status = _enum(dispatch_pb2.DeliveryStatus.Name(entry.status), "DELIVERY_STATUS_")
            detail = detail or status
        via = " / ".join(part for part in (entry.source, entry.channel) if part) or "-"
        table.add_row(_time(entry.occurred_at), kind, entry.name, via, detail, why(entry))
    return table


def customer_view(view: customer_pb2.Customer) -> Group:
    """Everything `enishi customer show` prints."""
    parts: list[Table] = [
        profile_table(view),
        identities_table(view.identity),
        counters_table(view.counters),
        consents_table(view),
        preferences_table(view.preferences),
        journeys_table(view),
        timeline_table(view.timeline, f"Newest {len(view.timeline)} timeline entries"),
    ]
    if view.timeline_aggregates:
        older = Table(title="Older history (folded)", title_justify="left")
        for column in ("name", "count", "first", "last"):
            older.add_column(column)
        for agg in view.timeline_aggregates:
            older.add_row(
                agg.name, str(agg.count), _time(agg.first_occurred_at), _time(agg.last_occurred_at)
            )
        parts.append(older)
    return Group(*parts)


# -- commands ---------------------------------------------------------------------------

IdentityArg = Annotated[
    str,
    typer.Argument(
        help="email:..., phone:..., line:..., anon:..., push:..., id:... or a bare customer id."
    ),
]
TargetOption = Annotated[
    str | None,
    typer.Option("--target", help=f"CustomerService host:port (env {TARGET_ENV})."),
]


@app.command("show")
def show(
    identity: IdentityArg,
    target: TargetOption = None,
    timeline: Annotated[int, typer.Option(help="Newest timeline entries to show.")] = 20,
) -> None:
    """The 360 view: profile, identities, counters, consents, preferences, journeys, timeline."""
    address = target or default_target()
    request = pb.GetCustomerRequest(customer=parse_identity(identity), timeline_limit=timeline)
    reply = _call(address, lambda stub: stub.GetCustomer(request, timeout=TIMEOUT_SECONDS))
    out.print(customer_view(reply.customer))


@app.command("timeline")
def timeline(
    identity: IdentityArg,
    target: TargetOption = None,
    limit: Annotated[int, typer.Option(help="Entries per page.")] = 50,
    name: Annotated[list[str] | None, typer.Option(help="Only these names (repeatable).")] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="Only these kinds, e.g. message, consent (repeatable).")
    ] = None,
    page_token: Annotated[str, typer.Option(help="next_page_token of a previous page.")] = "",
) -> None:
    """The customer's timeline, newest first, with the why of every message."""
    kinds = []
    for value in kind or []:
        try:
            kinds.append(touchpoint_pb2.TouchpointKind.Value(f"TOUCHPOINT_KIND_{value.upper()}"))
        except ValueError:
            err.print(f"[red]error:[/red] --kind: unknown kind {value!r}")
            raise typer.Exit(2) from None
    request = pb.ListTimelineRequest(
        customer=parse_identity(identity),
        page_size=limit,
        page_token=page_token,
        names=name or [],
        kinds=kinds,
    )
    address = target or default_target()
    reply = _call(address, lambda stub: stub.ListTimeline(request, timeout=TIMEOUT_SECONDS))
    out.print(timeline_table(reply.entries, f"Timeline of {reply.customer_id}"))
    if reply.next_page_token:
        out.print(f"more: --page-token {reply.next_page_token}")


@app.command("find")
def find(identity: IdentityArg, target: TargetOption = None) -> None:
    """Which customer an identity belongs to, and all their identities."""
    request = pb.FindCustomerRequest(customer=parse_identity(identity))
    address = target or default_target()
    reply = _call(address, lambda stub: stub.FindCustomer(request, timeout=TIMEOUT_SECONDS))
    matched = _enum(identity_pb2.IdentityKind.Name(reply.matched_by), "IDENTITY_KIND_")
    out.print(
        f"customer {reply.customer_id} (matched by {matched}{', merged' if reply.merged else ''})"
    )
    out.print(identities_table(reply.identity))
