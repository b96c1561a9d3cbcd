"""`python -m bench`: every benchmark next to the raw limits, measured in the same run.

Starts Tansu and Valkey on free ports (or uses `--kafka`/`--redis`), then, `--runs` times
over (interleaved, so a busy moment of the shared box hurts raw and project alike):
raw aiokafka produce and consume, raw pipelined HINCRBY, ingest BatchTrack → Kafka (its own
process), the memory writer and the whole stream processor, and the Redis bytes of the
processor's customers. Then, on its own stack with Temporal (`bench/bench_journeys.py`):
raw signal-with-start next to enrollments through the stream's trigger path, Temporal calls
per 1,000 events of a realistic mix, trigger → dispatch latency at half of the enrollment
peak, and history events per journey step. Peak RSS of the ingest process and of this
process while the stream processor and the journey worker run in it.

Prints a table of the best run of each figure with its ratio to its raw limit and its goal
(design.md §8) and writes it as JSON to `bench/results/<quick|full>[-<only>].json`. A full
run of everything also refreshes the run in docs/benchmarks.md (`--no-docs`: not).
`--quick` (one small run, for CI) takes about a minute and only shows that it runs.
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
from typing import Any

from redis.asyncio import Redis

from bench import bench_ingest, bench_journeys, bench_stream, proc, raw
from bench.report import Figure, as_json, markdown, number, refresh, table
from bench.servers import Servers, servers
from enishi.logs import configure_logging

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DOCS = ROOT.parent / "docs" / "benchmarks.md"
BENCHMARKS = ("ingest", "stream", "journeys")
CUSTOMER_SAMPLE = 200


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
    raw_messages=20_000, raw_redis_ops=20_000, ingest_events=20_000, stream_events=6_000, runs=1
)


def _figures(only: set[str]) -> dict[str, Figure]:
    """Every figure the benchmarks in `only` measure, raw limits first (table order)."""
    f: dict[str, Figure] = {}

    def add(figure: Figure) -> None:
        f[figure.key] = figure

    add(Figure("raw_produce", "raw aiokafka produce (send)", "msg/s"))
    add(Figure("raw_produce_batches", "raw aiokafka produce (send_batch)", "msg/s"))
    add(Figure("raw_consume", "raw aiokafka consume", "msg/s"))
    add(Figure("raw_hincrby", "raw redis-py pipelined HINCRBY", "ops/s"))
    if "journeys" in only:
        add(Figure("raw_signal_with_start", "raw Temporal signal-with-start", "/s"))
    if "ingest" in only:
        add(
            Figure(
                "ingest",
                "ingest BatchTrack → Kafka",
                "events/s",
                limit="raw_produce",
                goal_ratio=0.5,
            )
        )
    if "stream" in only:
        for key, label in (
            ("writer_worst", "memory writer, 1 event/customer/batch"),
            ("writer_grouped", "memory writer, 10 events/customer/batch"),
        ):
            add(Figure(key, label, "events/s", limit="raw_hincrby"))
        add(
            Figure(
                "processor",
                "stream processor (Kafka → Redis → commit)",
                "events/s",
                limit="raw_consume",
                goal_value=10_000,
            )
        )
    if "journeys" in only:
        add(
            Figure(
                "enrollments",
                "enrollments (stream trigger path → Temporal)",
                "/s",
                limit="raw_signal_with_start",
                goal_ratio=0.8,
            )
        )
        add(Figure("raw_signal_with_start_cpu", "CPU per raw start, all processes", "ms"))
        add(
            Figure(
                "enrollment_cpu",
                "CPU per enrollment, all processes",
                "ms",
                limit="raw_signal_with_start_cpu",
                lower_is_better=True,
            )
        )
        loads = (
            ("trigger_dispatch", "half of enrollment peak"),
            ("worker_dispatch", "half of worker pace"),
        )
        for key, load in loads:
            for quantile in ("p50", "p95", "p99"):
                add(
                    Figure(
                        f"{key}_{quantile}",
                        f"trigger → dispatch latency {quantile}, {load}",
                        "ms",
                        goal_max=500 if quantile == "p99" else None,
                        lower_is_better=True,
                    )
                )
        add(Figure("dispatch_pace", "dispatches/s the worker kept up (first load)", "/s"))
        add(Figure("temporal_calls", "Temporal calls per 1,000 events (mix)", "calls"))
        add(
            Figure(
                "temporal_calls_ignored",
                "Temporal calls per 1,000 events no journey names",
                "calls",
                goal_max=0,
                lower_is_better=True,
            )
        )
        add(Figure("history_per_step", "history events per journey step, mean", "events"))
        add(Figure("history_per_step_max", "history events per journey step, max", "events"))
    if "stream" in only:
        for key, label in (("customer_bytes", "mean"), ("customer_bytes_p99", "p99")):
            add(Figure(key, f"Redis bytes per customer, {label}", "bytes", lower_is_better=True))
    if "ingest" in only:
        add(Figure("ingest_rss", "peak RSS, ingest process", "MiB"))
    if "stream" in only:
        add(Figure("stream_rss", "peak RSS, this process running the stream processor", "MiB"))
    if "journeys" in only:
        add(Figure("runtime_rss", "peak RSS, this process running processor + worker", "MiB"))
    return f


async def _run(
    args: argparse.Namespace, sizes: Sizes, only: set[str], details: dict[str, Any]
) -> dict[str, Figure]:
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
                ingest: bench_ingest.IngestProcess | None = None
                if "ingest" in only:
                    ingest = await resources.enter_async_context(bench_ingest.ingest_process(stack))
                for run in range(sizes.runs):
                    started = time.perf_counter()
                    await _one_run(figures, stack, redis, ingest, batches, sizes, details)
                    print(
                        f"run {run + 1}/{sizes.runs}: {time.perf_counter() - started:.0f}s",
                        file=sys.stderr,
                    )
                if ingest is not None:
                    _sample(figures["ingest_rss"], proc.peak_rss_mb(ingest.pid))
                    figures["ingest_rss"].note = "its own process, over the whole run"
        finally:
            await redis.aclose()
    return figures


async def _one_run(
    figures: dict[str, Figure],
    stack: Servers,
    redis: Redis,
    ingest: bench_ingest.IngestProcess | None,
    batches: list[bytes],
    sizes: Sizes,
    details: dict[str, Any],
) -> None:
    n, parts = sizes.raw_messages, stack.partitions
    figures["raw_produce"].samples.append(await raw.produce(stack.kafka, n, parts))
    figures["raw_produce_batches"].samples.append(
        await raw.produce(stack.kafka, n, parts, batches=True)
    )
    figures["raw_consume"].samples.append(await raw.consume(stack.kafka, n, parts))
    figures["raw_hincrby"].samples.append(await raw.redis_hincrby(redis, sizes.raw_redis_ops))
    if ingest is not None:
        load = bench_ingest.Load(events=sizes.ingest_events)
        figures["ingest"].samples.append(
            await bench_ingest.batch_track(ingest.target, batches, load)
        )
    if "processor" in figures:
        events = sizes.stream_events
        customers = max(bench_stream.BATCH, events // 10)
        figures["writer_worst"].samples.append(
            await bench_stream.writer(redis, bench_stream.touchpoints(events, customers))
        )
        grouped = bench_stream.touchpoints(events, events // 10, group=10)
        figures["writer_grouped"].samples.append(await bench_stream.writer(redis, grouped))
        batch = bench_stream.touchpoints(events, customers)
        before = proc.rss_mb()
        proc.reset_peak_rss()
        figures["processor"].samples.append(
            await bench_stream.processor(stack.kafka, redis, batch, parts)
        )
        peak = proc.peak_rss_mb()
        _sample(figures["stream_rss"], peak)
        if peak is not None and before is not None:
            figures["stream_rss"].note = _growth(before, peak)
        sample = sorted({tp.customer_id for tp in batch})[:CUSTOMER_SAMPLE]
        memory = await bench_stream.customer_bytes(redis, sample)
        figures["customer_bytes"].samples.append(memory.mean)
        figures["customer_bytes_p99"].samples.append(memory.p99)
        details["customer_bytes"] = {
            **asdict(memory),
            "events_per_customer": events / customers,
            "how": "MEMORY USAGE ... SAMPLES 0 of every key family of a sample of the stream "
            "processor's customers (each with events_per_customer events)",
        }


def _growth(before: float, peak: float) -> str:
    return f"in-process: {peak - before:,.0f} MiB above the RSS before the phase"


def _sample(figure: Figure, value: float | None) -> None:
    if value is not None:
        figure.samples.append(value)


def _journeys(
    figures: dict[str, Figure], results: bench_journeys.Results, details: dict[str, Any]
) -> None:
    """The journey bench's results into its figures (one latency and mix run each)."""
    figures["raw_signal_with_start"].samples.extend(results.raw_samples)
    figures["enrollments"].samples.extend(results.enrollment_samples)
    # The CPU of the best run of each, the run the ratio is about.
    best_raw = results.raw_samples.index(max(results.raw_samples))
    best_enrolled = results.enrollment_samples.index(max(results.enrollment_samples))
    for key, cpu in (
        ("raw_signal_with_start_cpu", results.raw_cpu_ms[best_raw]),
        ("enrollment_cpu", results.enrollment_cpu_ms[best_enrolled]),
    ):
        figures[key].samples.append(cpu["all"])
        figures[key].note = ", ".join(f"{n} {ms:.2f}" for n, ms in cpu.items() if n != "all")
    for key, latency in (
        ("trigger_dispatch", results.latency),
        ("worker_dispatch", results.latency_at_worker_pace),
    ):
        load = f"at {latency['rate_per_s']:.1f}/s, {latency['dispatched']}/{latency['sent']}"
        load += " dispatched"
        if latency["dispatched"] < latency["sent"]:
            load += " (lower bound)"
        for quantile in ("p50", "p95", "p99"):
            figure = figures[f"{key}_{quantile}"]
            _sample(figure, latency["ms"].get(quantile))
            figure.note = load
    figures["dispatch_pace"].samples.append(results.latency["pace_per_s"])
    mix = results.mix
    figures["temporal_calls"].samples.append(mix["calls_per_1000_events"])
    figures["temporal_calls"].note = (
        ", ".join(f"{kind} {number(n)}" for kind, n in sorted(mix["calls_by_kind"].items()))
        + f" of {mix['events']:,} events"
    )
    figures["temporal_calls_ignored"].samples.append(mix["calls_per_1000_ignored_events"])
    figures["temporal_calls_ignored"].note = f"{mix['ignored_events']:,} such events"
    history = results.history
    figures["history_per_step"].samples.append(history["events_per_step_mean"])
    figures["history_per_step"].note = (
        f"{history['workflows']} runs of {bench_journeys.STEPS}, "
        f"{number(history['steps_mean'])} steps, {number(history['events_mean'])} events each"
    )
    # The max over every run read, the short journey's too (fewer steps share the start).
    worst = max(
        (h["events_per_step_max"], name)
        for name, h in (
            (bench_journeys.STEPS, history),
            (bench_journeys.THANKS, results.history_thanks),
        )
        if h
    )
    figures["history_per_step_max"].samples.append(worst[0])
    figures["history_per_step_max"].note = f"a {worst[1]} run"
    _sample(figures["runtime_rss"], results.runtime_peak_rss_mb)
    if results.runtime_peak_rss_mb is not None and results.runtime_rss_before_mb is not None:
        figures["runtime_rss"].note = _growth(
            results.runtime_rss_before_mb, results.runtime_peak_rss_mb
        )
    details["journeys"] = asdict(results)


def _details_text(details: dict[str, Any]) -> str:
    """What the main table leaves out: bytes per key family, history event types."""
    parts = []
    memory = details.get("customer_bytes")
    if memory:
        rows = [
            (family, number(size))
            for family, size in sorted(memory["families"].items(), key=lambda kv: -kv[1])
        ]
        parts.append(
            f"Redis bytes per customer by key family (mean of {memory['customers']} customers "
            f"with {number(memory['events_per_customer'])} events each):\n\n"
            + markdown(("key family", "bytes"), rows)
        )
    journeys = details.get("journeys", {})
    sources = ((bench_journeys.STEPS, "history"), (bench_journeys.THANKS, "history_thanks"))
    runs = {name: journeys[key] for name, key in sources if journeys.get(key)}
    if runs:
        types = list(dict.fromkeys(t for run in runs.values() for t in run["event_types_per_run"]))
        header = ("history event type, per run", *runs)
        history_rows: list[tuple[str, ...]] = [
            (t, *(number(run["event_types_per_run"].get(t, 0)) for run in runs.values()))
            for t in types
        ]
        history_rows.append(("all events", *(number(run["events_mean"]) for run in runs.values())))
        history_rows.append(("steps taken", *(number(run["steps_mean"]) for run in runs.values())))
        history_rows.append(
            ("events per step", *(number(run["events_per_step_mean"]) for run in runs.values()))
        )
        counts = ", ".join(f"{name}: {run['workflows']}" for name, run in runs.items())
        parts.append(
            f"History events of a journey run by type (mean over runs; {counts}):\n\n"
            + markdown(header, history_rows)
        )
    return "\n\n".join(parts)


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
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="trigger → dispatch load, triggers/s (default: half of the enrollment peak)",
    )
    parser.add_argument("--latency-seconds", type=float, help="how long that load runs")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write cProfile statistics of the first enrollment run to this file",
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/...)")
    parser.add_argument("--no-docs", action="store_true", help="do not refresh docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    configure_logging("WARNING", "console", "bench", stream=sys.stderr)
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": args.runs})
    only = set(args.only or BENCHMARKS)
    details: dict[str, Any] = {}
    figures = asyncio.run(_run(args, sizes, only, details))
    journey_sizes = bench_journeys.QUICK if args.quick else bench_journeys.Sizes()
    if "journeys" in only:
        overrides: dict[str, Any] = {"latency_rate": args.latency_rate}
        if args.latency_seconds:
            overrides["latency_seconds"] = args.latency_seconds
        if args.runs:
            overrides["runs"] = args.runs
        journey_sizes = bench_journeys.Sizes(**{**asdict(journey_sizes), **overrides})
        results = asyncio.run(
            bench_journeys.measure(journey_sizes, partitions=args.partitions, profile=args.profile)
        )
        _journeys(figures, results, details)
    mode = "quick" if args.quick else "full"
    everything = only == set(BENCHMARKS)
    output = (
        args.output or RESULTS / f"{mode}{'' if everything else '-' + '-'.join(sorted(only))}.json"
    )
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    seconds = time.perf_counter() - started
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    result = as_json(
        figures,
        details,
        mode=mode,
        when=when,
        seconds=round(seconds, 1),
        sizes=asdict(sizes),
        journey_sizes=asdict(journey_sizes) if "journeys" in only else None,
        machine=machine,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    text = table(figures)
    extra = _details_text(details)
    print(text + ("\n\n" + extra if extra else ""))
    print(f"\nwritten to {output} ({seconds:.0f}s)")
    if mode == "full" and everything and not args.no_docs:
        heading = (
            f"`python -m bench` of {when} ({seconds / 60:.0f} min; {machine['cpus']} CPUs, "
            f"Python {machine['python']}, 1-minute load average at the end "
            f"{machine['load_average_1m_at_end']}; JSON: `bench/results/{output.name}`)"
        )
        refresh(DOCS, "\n\n".join(part for part in (heading, text, extra) if part))
        print(f"refreshed {DOCS}")


if __name__ == "__main__":
    main()
