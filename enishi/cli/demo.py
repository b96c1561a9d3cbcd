"""`enishi demo`: the main job on the stack from `enishi dev up`.

Until the journey demo exists (issue #5) this is the smoke run: synthetic customers' touchpoints
go in through `IngestService.BatchTrack` and are read back from Kafka `touchpoints`, with
progress and a summary of what went in and what came out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from uuid import uuid4

import grpc
import typer
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from enishi import topics
from enishi.catalog import by_name
from enishi.config import DevStackSettings
from enishi.devstack.parts import LOOPBACK, kafka_bootstrap
from enishi.devstack.probes import quiet_client_logs
from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb
from enishi.v1 import ingest_service_pb2_grpc as pb_grpc

console = Console()
EVENT_NAMES = (
    "page.viewed",
    "product.viewed",
    "cart.updated",
    "order.completed",
    "support.contacted",
)
BATCH = 500


def _events(run_id: str, customers: int, events: int) -> list[touchpoint_pb2.Touchpoint]:
    rng = random.Random(run_id)
    batch = []
    for i in range(events):
        customer = f"demo-{run_id}-{rng.randrange(customers):05d}"
        name = rng.choices(EVENT_NAMES, weights=(50, 25, 12, 8, 5))[0]
        event = touchpoint_pb2.Touchpoint(
            customer=identity_pb2.CustomerRef(customer_id=customer),
            name=name,
            source="enishi-demo",
            channel="web",
        )
        event.attributes["demo_run"] = run_id
        event.props.update({"seq": i})
        if name == "order.completed":
            event.props.update({"total": rng.choice((1800, 3200, 5400, 12800))})
        batch.append(event)
    return batch


async def _run(customers: int, events: int, timeout: float) -> int:
    settings = DevStackSettings()
    spec = by_name("ingest")
    assert spec.grpc_port is not None
    target = f"{LOOPBACK}:{spec.grpc_port + settings.service_port_offset}"
    run_id = uuid4().hex[:8]
    outgoing = _events(run_id, customers, events)
    sent_names = Counter(e.name for e in outgoing)

    consumer = AIOKafkaConsumer(
        topics.TOUCHPOINTS,
        bootstrap_servers=kafka_bootstrap(settings),
        group_id=f"enishi-demo-{run_id}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    # Join the group and fix positions before producing, so "latest" does not skip our events.
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    for tp in consumer.assignment():
        await consumer.position(tp)

    accepted = 0
    read_back: Counter[str] = Counter()
    started = time.monotonic()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            send_task = progress.add_task("ingest (gRPC BatchTrack)", total=events)
            read_task = progress.add_task("read back (Kafka touchpoints)", total=events)
            async with grpc.aio.insecure_channel(target) as channel:
                stub = pb_grpc.IngestServiceStub(channel)
                for start in range(0, events, BATCH):
                    reply = await stub.BatchTrack(
                        pb.BatchTrackRequest(events=outgoing[start : start + BATCH]), timeout=30
                    )
                    accepted += reply.accepted_count
                    progress.update(send_task, advance=len(reply.results))
            sent_elapsed = time.monotonic() - started
            async with asyncio.timeout(timeout):
                while sum(read_back.values()) < accepted:
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        for record in records:
                            event = touchpoint_pb2.Touchpoint.FromString(record.value)
                            if event.attributes.get("demo_run") == run_id:
                                read_back[event.name] += 1
                                progress.update(read_task, advance=1)
    except grpc.aio.AioRpcError as exc:
        console.print(
            f"[red]ingest at {target} answered {exc.code().name}: {exc.details()}[/red]\n"
            "Is the stack up? `enishi dev up --detach`"
        )
        return 1
    except TimeoutError:
        console.print(f"[red]only {sum(read_back.values())} of {accepted} events came back[/red]")
        return 1
    finally:
        await consumer.stop()

    table = Table(title=f"demo run {run_id}: {customers} customers")
    for column in ("event", "sent", "in Kafka"):
        table.add_column(column, justify="right" if column != "event" else "left")
    for name in EVENT_NAMES:
        table.add_row(name, str(sent_names[name]), str(read_back[name]))
    table.add_row("[bold]total[/bold]", str(events), str(sum(read_back.values())))
    console.print(table)
    console.print(
        f"ingest: {accepted} accepted in {sent_elapsed:.2f}s "
        f"({accepted / max(sent_elapsed, 1e-6):,.0f} events/s); every event read back once."
    )
    return 0 if read_back == sent_names else 1


def demo(
    customers: int = typer.Option(200, min=1, help="How many synthetic customers."),
    events: int = typer.Option(5000, min=1, help="How many touchpoints to send."),
    timeout: float = typer.Option(60.0, min=1, help="Seconds to wait for the read-back."),
) -> None:
    """Run the main job against the local stack (today: the ingest → Kafka smoke run)."""
    quiet_client_logs()
    raise typer.Exit(asyncio.run(_run(customers, events, timeout)))
