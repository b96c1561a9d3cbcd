"""Ingest throughput (gRPC BatchTrack → Kafka) next to raw aiokafka produce, same run.

Starts Tansu and Valkey on free ports (or uses `--kafka`/`--redis`), measures raw aiokafka
produce of 200-byte values with linger 5 ms, then runs the ingest service as its own
process (`python -m services.ingest`) and measures events/s a client gets through
BatchTrack until Kafka acknowledged them. Prints both and the ratio, writes
bench/results/ingest.json. It never asserts a time. Run: `python -m bench.bench_ingest`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from enishi import kafka, topics
from enishi.config import CommonSettings, DevStackSettings
from enishi.devstack import probes
from enishi.devstack.parts import kafka_bootstrap, redis_url
from enishi.devstack.ports import free_port
from enishi.devstack.supervisor import Supervisor
from enishi.v1 import identity_pb2
from enishi.v1 import ingest_service_pb2 as pb

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
RAW_TOPIC = "bench.raw"
VALUE_BYTES = 200
LINGER_MS = 5


@asynccontextmanager
async def _servers(args: argparse.Namespace) -> AsyncIterator[tuple[str, str]]:
    if args.kafka and args.redis:
        yield args.kafka, args.redis
        return
    with tempfile.TemporaryDirectory() as state:
        settings = DevStackSettings.model_validate(
            {
                "state_dir": Path(state),
                "kafka_port": free_port(),
                "temporal_port": free_port(),
                "temporal_ui_port": free_port(),
                "redis_port": free_port(),
                "partitions": args.partitions,
            }
        )
        supervisor = Supervisor(settings, services=False)
        await supervisor.up()
        try:
            yield kafka_bootstrap(settings), redis_url(settings)
        finally:
            await supervisor.down()


async def raw_produce(bootstrap: str, count: int, partitions: int) -> dict[str, Any]:
    """aiokafka alone, configured as enishi's producers are: the limit ingest works under."""
    await kafka.ensure_topics(bootstrap, [RAW_TOPIC], partitions=partitions)
    producer = kafka.producer(CommonSettings(kafka_bootstrap=bootstrap), linger_ms=LINGER_MS)
    await producer.start()
    try:
        value = os.urandom(VALUE_BYTES)
        keys = [f"c-{i}".encode() for i in range(10_000)]
        await (await producer.send(RAW_TOPIC, value=value, key=keys[0]))  # connect, metadata
        started = time.perf_counter()
        pending = [
            await producer.send(RAW_TOPIC, value=value, key=keys[i % len(keys)])
            for i in range(count)
        ]
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"messages": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed)}


def _batches(count: int, batch: int, anonymous_share: float) -> tuple[list[bytes], int]:
    """Pre-serialized BatchTrack requests, so the client costs the server's CPU little."""
    rng = random.Random(7)
    requests, sizes = [], 0
    for start in range(0, count, batch):
        request = pb.BatchTrackRequest()
        for i in range(start, min(start + batch, count)):
            if rng.random() < anonymous_share:
                ref = identity_pb2.CustomerRef(anonymous_id=f"device-{rng.randrange(5_000)}")
            else:
                ref = identity_pb2.CustomerRef(customer_id=f"cust-{rng.randrange(10_000)}")
            event = request.events.add(customer=ref, name="page.viewed", source="bench")
            event.props.update({"path": f"/items/{i % 977}", "ref": "campaign-spring", "n": i})
            sizes += event.ByteSize()
        requests.append(request.SerializeToString())
    return requests, sizes // max(count, 1)


async def _wait_serving(target: str, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(30):
        while not await probes.grpc_health(target):
            if proc.poll() is not None:
                raise RuntimeError(f"ingest exited with {proc.returncode}")
            await asyncio.sleep(0.2)


async def ingest_throughput(bootstrap: str, redis: str, args: argparse.Namespace) -> dict[str, Any]:
    """Events/s through a separate ingest process, acknowledged by Kafka before each reply."""
    port = free_port()
    env = {
        **os.environ,
        "ENISHI_KAFKA_BOOTSTRAP": bootstrap,
        "ENISHI_REDIS_URL": redis,
        "ENISHI_GRPC_HOST": "127.0.0.1",
        "ENISHI_GRPC_PORT": str(port),
        "ENISHI_METRICS_PORT": "0",
        "ENISHI_LOG_LEVEL": "WARNING",
        "ENISHI_KAFKA_LINGER_MS": str(args.linger_ms),
    }
    requests, event_bytes = _batches(args.events, args.batch, args.anonymous_share)
    proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env)
    target = f"127.0.0.1:{port}"
    try:
        await _wait_serving(target, proc)
        async with grpc.aio.insecure_channel(target) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/enishi.v1.IngestService/BatchTrack"
            )
            await call(requests[0], timeout=60)  # warm up: connections, first identities
            queue = list(reversed(requests))
            accepted = 0

            async def worker() -> None:
                nonlocal accepted
                while queue:
                    reply = pb.BatchTrackResponse.FromString(await call(queue.pop(), timeout=60))
                    accepted += reply.accepted_count

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "events": args.events,
        "accepted": accepted,
        "seconds": round(elapsed, 3),
        "per_second": round(accepted / elapsed),
        "batch": args.batch,
        "concurrency": args.concurrency,
        "anonymous_share": args.anonymous_share,
        "mean_event_bytes": event_bytes,
        "linger_ms": args.linger_ms,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both measurements against the same servers, and their ratio."""
    async with _servers(args) as (bootstrap, redis):
        await kafka.ensure_topics(bootstrap, [topics.TOUCHPOINTS], partitions=args.partitions)
        raw = await raw_produce(bootstrap, args.raw_messages, args.partitions)
        ingest = await ingest_throughput(bootstrap, redis, args)
    return {
        "benchmark": "ingest",
        "raw_aiokafka_produce": raw,
        "ingest_batch_track": ingest,
        "ratio": round(ingest["per_second"] / raw["per_second"], 3),
        "goal_ratio": 0.5,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ingest", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events sent through ingest")
    parser.add_argument("--raw-messages", type=int, default=200_000, help="raw produce count")
    parser.add_argument("--batch", type=int, default=500, help="events per BatchTrack call")
    parser.add_argument("--concurrency", type=int, default=4, help="BatchTrack calls in flight")
    parser.add_argument(
        "--anonymous-share", type=float, default=0.2, help="share of events by anonymous id"
    )
    parser.add_argument("--linger-ms", type=int, default=LINGER_MS, help="ingest producer linger")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--kafka", help="use this broker instead of starting Tansu")
    parser.add_argument("--redis", help="use this Redis instead of starting Valkey")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    result = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    raw, ingest = result["raw_aiokafka_produce"], result["ingest_batch_track"]
    print(f"raw aiokafka produce : {raw['per_second']:>9,} msg/s ({raw['messages']:,} messages)")
    print(f"ingest BatchTrack    : {ingest['per_second']:>9,} events/s ({ingest['accepted']:,})")
    print(f"ratio                : {result['ratio']:.2f} (goal >= {result['goal_ratio']})")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
