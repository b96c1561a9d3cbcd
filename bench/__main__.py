"""`python -m bench`: every benchmark next to the raw limits, measured in the same run.

Starts Tansu and Valkey on free ports (or uses `--kafka`/`--redis`), then, `--runs` times
over (interleaved, so a busy moment of the shared box hurts raw and project alike):
raw aiokafka produce and consume, raw pipelined HINCRBY, ingest BatchTrack → Kafka, the
memory writer and the whole stream processor; then, on its own stack with Temporal, raw
signal-with-start next to enrollments through the stream's trigger path, Temporal calls for
ignored events and trigger → dispatch latency (`bench/bench_journeys.py`). Prints a table of
the best run of each figure with its ratio to its raw limit and its goal (design.md §8), and
writes it as JSON to `bench/results/<quick|full>.json`. `--quick` (one small run) takes
about a minute.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from redis.asyncio import Redis

from bench import bench_ingest, bench_journeys, bench_stream, raw
from bench.report import Figure, as_json, table
from bench.servers import Servers, servers
from enishi.logs import configure_logging

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("ingest", "stream", "journeys")


@dataclass(frozen=True)
class Sizes:
    """How much each measurement moves per run."""

    raw_messages: int
    raw_redis_ops: int
    ingest_events: int
    stream_events: int
    runs: int


FULL = Sizes(
    raw_messages=200_000, raw_redis_ops=100_000, ingest_events=200_000, stream_events=40_000, runs=3
)
QUICK = Sizes(
    raw_messages=30_000, raw_redis_ops=20_000, ingest_events=30_000, stream_events=10_000, runs=1
)


def _figures(only: set[str]) -> dict[str, Figure]:
    figures = {
        "raw_produce": Figure("raw_produce", "raw aiokafka produce (send)", "msg/s"),
        "raw_produce_batches": Figure(
            "raw_produce_batches", "raw aiokafka produce (send_batch)", "msg/s"
        ),
        "raw_consume": Figure("raw_consume", "raw aiokafka consume", "msg/s"),
        "raw_hincrby": Figure("raw_hincrby", "raw redis-py pipelined HINCRBY", "ops/s"),
    }
    if "ingest" in only:
        figures["ingest"] = Figure(
            "ingest",
            "ingest BatchTrack → Kafka",
            "events/s",
            limit="raw_produce",
            goal_ratio=0.5,
        )
    if "stream" in only:
        figures["writer_worst"] = Figure(
            "writer_worst",
            "memory writer, 1 event/customer/batch",
            "events/s",
            limit="raw_hincrby",
        )
        figures["writer_grouped"] = Figure(
            "writer_grouped",
            "memory writer, 10 events/customer/batch",
            "events/s",
            limit="raw_hincrby",
        )
        figures["processor"] = Figure(
            "processor",
            "stream processor (Kafka → Redis → commit)",
            "events/s",
            limit="raw_consume",
            goal_value=10_000,
        )
        figures["customer_bytes"] = Figure(
            "customer_bytes", "Redis memory per customer (10 events)", "bytes"
        )
    return figures


async def _run(args: argparse.Namespace, sizes: Sizes, only: set[str]) -> dict[str, Figure]:
    figures = _figures(only)
    async with servers(
        kafka_bootstrap_servers=args.kafka, redis=args.redis, partitions=args.partitions
    ) as stack:
        redis = Redis.from_url(stack.redis)
        try:
            batches = (
                bench_ingest.requests(bench_ingest.Load(events=sizes.ingest_events))
                if "ingest" in only
                else []
            )
            async with contextlib.AsyncExitStack() as resources:
                target = ""
                if "ingest" in only:
                    target = await resources.enter_async_context(bench_ingest.ingest_process(stack))
                for run in range(sizes.runs):
                    started = time.perf_counter()
                    await _one_run(figures, stack, redis, target, batches, sizes, only)
                    print(
                        f"run {run + 1}/{sizes.runs}: {time.perf_counter() - started:.0f}s",
                        file=sys.stderr,
                    )
        finally:
            await redis.aclose()
    return figures


async def _one_run(
    figures: dict[str, Figure],
    stack: Servers,
    redis: Redis,
    target: str,
    batches: list[bytes],
    sizes: Sizes,
    only: set[str],
) -> None:
    n, parts = sizes.raw_messages, stack.partitions
    figures["raw_produce"].samples.append(await raw.produce(stack.kafka, n, parts))
    figures["raw_produce_batches"].samples.append(
        await raw.produce(stack.kafka, n, parts, batches=True)
    )
    figures["raw_consume"].samples.append(await raw.consume(stack.kafka, n, parts))
    figures["raw_hincrby"].samples.append(await raw.redis_hincrby(redis, sizes.raw_redis_ops))
    if "ingest" in only:
        load = bench_ingest.Load(events=sizes.ingest_events)
        figures["ingest"].samples.append(await bench_ingest.batch_track(target, batches, load))
    if "stream" in only:
        events = sizes.stream_events
        customers = max(bench_stream.BATCH, events // 10)
        figures["writer_worst"].samples.append(
            await bench_stream.writer(redis, bench_stream.touchpoints(events, customers))
        )
        grouped = bench_stream.touchpoints(events, events // 10, group=10)
        figures["writer_grouped"].samples.append(await bench_stream.writer(redis, grouped))
        sample = sorted({tp.customer_id for tp in grouped})[:100]
        figures["customer_bytes"].samples.append(
            await bench_stream.bytes_per_customer(redis, sample)
        )
        figures["processor"].samples.append(
            await bench_stream.processor(
                stack.kafka, redis, bench_stream.touchpoints(events, customers), parts
            )
        )


def _journey_figures(results: bench_journeys.Results) -> dict[str, Figure]:
    """The journey bench's results as figures (one sample each: it measures once)."""
    figures = {
        "raw_signal_with_start": Figure(
            "raw_signal_with_start", "raw Temporal signal-with-start", "/s"
        ),
        "enrollments": Figure(
            "enrollments",
            "enrollments (stream trigger path → Temporal)",
            "/s",
            limit="raw_signal_with_start",
            goal_ratio=0.8,
        ),
        "temporal_calls_ignored": Figure(
            "temporal_calls_ignored",
            "Temporal calls per 1,000 events no journey cares about",
            "calls",
            note="goal: 0",
        ),
    }
    figures["raw_signal_with_start"].samples.append(results.raw_signal_with_start_per_s)
    figures["enrollments"].samples.append(results.enrollments_per_s)
    figures["temporal_calls_ignored"].samples.append(results.temporal_calls_per_1000_ignored)
    for quantile, value in sorted(results.latency_ms.items()):
        key = f"trigger_dispatch_{quantile}"
        figures[key] = Figure(key, f"trigger → dispatch latency {quantile}", "ms")
        figures[key].samples.append(value)
    return figures


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one small run (< 1 minute)")
    parser.add_argument("--runs", type=int, help="runs to take the best of (3; quick: 1)")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        help="run only this benchmark (repeatable); raw limits always run",
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--kafka", default="", help="use this broker instead of Tansu")
    parser.add_argument("--redis", default="", help="use this Redis instead of Valkey")
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    configure_logging("WARNING", "console", "bench", stream=sys.stderr)
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": args.runs})
    only = set(args.only or BENCHMARKS)
    figures = asyncio.run(_run(args, sizes, only))
    if "journeys" in only:
        journeys = bench_journeys.QUICK if args.quick else bench_journeys.Sizes()
        figures.update(_journey_figures(asyncio.run(bench_journeys.measure(journeys))))
    mode = "quick" if args.quick else "full"
    output = (
        args.output
        or RESULTS / f"{mode}{'' if only == set(BENCHMARKS) else '-' + '-'.join(sorted(only))}.json"
    )
    result = as_json(
        figures,
        mode=mode,
        sizes=asdict(sizes),
        when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(figures))
    print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()
