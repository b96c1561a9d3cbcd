"""`enishi demo`: the main job, on the stack from `enishi dev up` (docs/demo.md).

Registers and activates the demo's journeys, creates synthetic customers with their histories
through ingest and the customer service, sends the events that start their journeys, shows
live progress, and ends with the accounting of every enrollment and one customer's 360 view.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from uuid import uuid4

import grpc
import typer
from rich.console import Console
from rich.live import Live

from enishi import grpc_client
from enishi.cli.customer import customer_view
from enishi.cli.sandbox import call as sandbox_call
from enishi.cli.sandbox import ledger_table
from enishi.demo.feed import Feed, FeedError
from enishi.demo.journeys import JourneySetupError, ensure_active
from enishi.demo.population import DemoCustomer, population
from enishi.demo.progress import MetricsDelta, Rate, live_view, scrape
from enishi.demo.stack import Stack
from enishi.demo.summary import (
    LedgerCounts,
    accounting_line,
    accounting_table,
    channels_table,
    interesting_customer,
    ledger_counts,
    problems,
    reasons_table,
)
from enishi.demo.tally import Tally, TallyReader
from enishi.devstack.probes import quiet_client_logs
from enishi.v1 import customer_pb2, identity_pb2
from enishi.v1 import customer_service_pb2 as customers_pb
from enishi.v1 import customer_service_pb2_grpc as customers_grpc

console = Console(highlight=False)
REFRESH_SECONDS: Final = 0.5
SETTLE_SECONDS: Final = 2.0  # no accounting change for this long, nothing pending: settled
TIMELINE_ENTRIES: Final = 20


async def _check_stack(stack: Stack) -> bool:
    down = await stack.down_parts()
    if down:
        console.print(
            f"[red]The local stack is not up[/red] (not answering: {', '.join(down)}).\n"
            "Start it with `enishi dev up --detach` (or `make demo`), then run `enishi demo` "
            "again."
        )
    return not down


def _settled(tally: Tally, expected: Counter[str], feed_done: bool, now: float) -> bool:
    if not feed_done:
        return False
    entered = tally.by_journey()
    if any(entered[j] < n for j, n in expected.items()):
        return False
    return tally.pending() == 0 and now - tally.last_change >= SETTLE_SECONDS


async def _ledger_entries(stack: Stack) -> list[dict[str, Any]] | None:
    """Every sandbox ledger entry; None when the sandbox does not answer."""
    try:
        reply = await asyncio.to_thread(sandbox_call, stack.sandbox_url, "GET", "/sandbox/ledger")
    except typer.Exit:  # `call` has said why on stderr
        return None
    return list(reply["entries"])


async def _ledger(stack: Stack, customers: list[DemoCustomer], since: str) -> LedgerCounts | None:
    """This run's deliveries: to its customers' addresses, since it began (ISO UTC)."""
    entries = await _ledger_entries(stack)
    if entries is None:
        return None
    addresses = {a for c in customers for a in c.addresses()}
    return ledger_counts((e for e in entries if str(e.get("at", "")) >= since), addresses)


async def _customer(stack: Stack, customer_id: str) -> customer_pb2.Customer | None:
    """The 360 view, once the customer's message is in their memory (a moment after Kafka)."""
    request = customers_pb.GetCustomerRequest(
        customer=identity_pb2.CustomerRef(customer_id=customer_id),
        timeline_limit=TIMELINE_ENTRIES,
    )
    async with grpc_client.aio_channel(stack.grpc_target("customers")) as channel:
        stub = customers_grpc.CustomerServiceStub(channel)
        view = None
        for _ in range(20):
            reply = await stub.GetCustomer(request, timeout=10)
            view = reply.customer
            if any(e.name == "message.sent" for e in view.timeline):
                break
            await asyncio.sleep(0.25)
        return view


async def _run(customers_count: int, rate: float, timeout: float) -> int:
    stack = Stack.from_env()
    if not await _check_stack(stack):
        return 1
    try:
        journeys = await ensure_active(stack.grpc_target("registry"))
    except JourneySetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    for journey in journeys:
        how = "registered and activated" if journey.created else "active"
        console.print(f"journey {journey.journey_id} v{journey.version}: {how}")

    run_id = uuid4().hex[:8]
    run_started = datetime.now(UTC)
    customers = population(run_id, customers_count, run_started)
    expected = Counter(c.journey for c in customers if c.journey)
    tally = Tally(prefix=f"demo-{run_id}-")
    reader = TallyReader(stack.kafka_bootstrap, tally)
    await reader.start()
    metrics = MetricsDelta(baseline=await scrape(stack))
    metrics.current = dict(metrics.baseline)
    feed = Feed(stack.grpc_target("ingest"), stack.grpc_target("customers"), rate)
    segments = Counter(c.segment for c in customers)
    console.print(
        f"run {run_id}: {customers_count} customers "
        f"({', '.join(f'{k} {v}' for k, v in sorted(segments.items()))}), ids demo-{run_id}-*"
    )
    started = time.monotonic()
    feeding = asyncio.create_task(feed.run(customers))
    events_rate, enrollments_rate = Rate(), Rate()
    timed_out = False
    loop = asyncio.get_running_loop()
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                metrics.current = await scrape(stack)
                elapsed = time.monotonic() - started
                live.update(
                    live_view(
                        run_id=run_id,
                        elapsed=elapsed,
                        feed=feed.counts,
                        events_per_second=events_rate.update(feed.counts.calls_and_events),
                        enrollments_per_second=enrollments_rate.update(len(tally.entered())),
                        tally=tally,
                        expected=expected,
                        metrics=metrics,
                    )
                )
                if feeding.done() and feeding.exception() is not None:
                    break
                if _settled(tally, expected, feeding.done(), loop.time()):
                    break
                if elapsed > timeout:
                    timed_out = True
                    break
                await asyncio.sleep(REFRESH_SECONDS)
    finally:
        if not feeding.done():
            feeding.cancel()
        await reader.stop()
    failure = feeding.exception() if feeding.done() and not feeding.cancelled() else None
    if failure is not None:
        if isinstance(failure, grpc.aio.AioRpcError):
            console.print(f"[red]error:[/red] {failure.code().name}: {failure.details()}")
        elif isinstance(failure, FeedError):
            console.print(f"[red]error:[/red] {failure}")
        else:
            raise failure
        return 1

    elapsed = time.monotonic() - started
    ledger = await _ledger(stack, customers, run_started.isoformat())
    decisions = metrics.by_label("enishi_trigger_decisions_total", "outcome")
    delivered = metrics.by_label("enishi_channel_dispatches_total", "channel", outcome="sent")
    console.print(accounting_table(tally, expected))
    console.print(reasons_table(tally))
    console.print(channels_table(tally, ledger, delivered))
    how = f"timed out after {timeout:.0f}s" if timed_out else f"settled after {elapsed:.0f}s"
    console.print(
        f"run {run_id}: {feed.counts.calls_and_events} calls and events sent, "
        f"{tally.events_seen} of this run's events read back from Kafka; {how}"
    )
    line = accounting_line(tally)
    found = problems(tally, expected, ledger, decisions)
    console.print(line, style="red" if found else "green", markup=False)

    chosen = interesting_customer(tally, customers)
    if chosen is not None:
        view = await _customer(stack, chosen)
        if view is not None:
            console.rule(f"360 view of {chosen}: `enishi customer show {chosen}`")
            console.print(customer_view(view))
            person = next(c for c in customers if c.customer_id == chosen)
            reply = await asyncio.to_thread(
                sandbox_call, stack.sandbox_url, "GET", "/sandbox/ledger"
            )
            mine = [e for e in reply["entries"] if e.get("to") in person.addresses()]
            console.print(ledger_table(mine))
    if found:
        console.print("[red]The numbers do not add up:[/red]")
        for problem in found:
            console.print(f"  - {problem}", markup=False)
        return 1
    if tally.pending():
        console.print(
            f"{tally.pending()} enrollment(s) still waiting when the run ended "
            "(raise --timeout to see them through)",
            style="yellow",
            markup=False,
        )
    return 0


def demo(
    customers: Annotated[
        int, typer.Option("--customers", min=1, help="How many synthetic customers.")
    ] = 2000,
    rate: Annotated[
        float,
        typer.Option(
            "--rate", "--speed", min=0, help="Calls and events per second sent; 0: no limit."
        ),
    ] = 2000.0,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1, help="Seconds the run may take before the summary."),
    ] = 180.0,
) -> None:
    """Run the main job on the local stack: journeys, customers, live progress, accounting."""
    quiet_client_logs()
    raise typer.Exit(asyncio.run(_run(customers, rate, timeout)))
