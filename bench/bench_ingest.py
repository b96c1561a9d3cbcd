"""Ingest throughput: gRPC BatchTrack → Kafka, through a separate ingest process.

The ingest service runs as its own process (`python -m services.ingest`), exactly as
deployed; a client keeps `concurrency` BatchTrack calls of `batch` pre-serialized events in
flight and counts events accepted, each call answering only once Kafka acknowledged its
events. 80% of events name a customer id, 20% an anonymous device id (which resolution
maps to minted customers). `python -m bench.bench_ingest` runs this benchmark and its raw
limits alone; `python -m bench` runs everything. It never asserts a time.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from bench.servers import API_KEY, CLIENT, Servers
from enishi import grpc_client
from enishi.devstack import probes
from enishi.devstack.ports import free_port
from enishi.v1 import identity_pb2
from enishi.v1 import ingest_service_pb2 as pb

LINGER_MS = 5


@dataclass(frozen=True)
class Load:
    """What the client sends."""

    events: int = 200_000
    batch: int = 500
    concurrency: int = 4
    anonymous_share: float = 0.2


def requests(load: Load, seed: int = 7) -> list[bytes]:
    """Pre-serialized BatchTrack requests, so the client costs the server's CPU little."""
    rng = random.Random(seed)
    result = []
    for start in range(0, load.events, load.batch):
        request = pb.BatchTrackRequest()
        for i in range(start, min(start + load.batch, load.events)):
            if rng.random() < load.anonymous_share:
                ref = identity_pb2.CustomerRef(anonymous_id=f"device-{rng.randrange(5_000)}")
            else:
                ref = identity_pb2.CustomerRef(customer_id=f"cust-{rng.randrange(10_000)}")
            event = request.events.add(customer=ref, name="page.viewed", source="bench")
            event.props.update({"path": f"/items/{i % 977}", "ref": "campaign-spring", "n": i})
        result.append(request.SerializeToString())
    return result


@dataclass(frozen=True)
class IngestProcess:
    """The running ingest service: where it listens, and its pid (for its peak RSS)."""

    target: str
    pid: int


@asynccontextmanager
async def ingest_process(servers: Servers) -> AsyncIterator[IngestProcess]:
    """A running `python -m services.ingest` on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "ENISHI_KAFKA_BOOTSTRAP": servers.kafka,
        "ENISHI_KAFKA_IDEMPOTENCE": "false",  # Tansu has no InitProducerId
        "ENISHI_REDIS_URL": servers.redis,
        "ENISHI_GRPC_HOST": "127.0.0.1",
        "ENISHI_GRPC_PORT": str(port),
        "ENISHI_METRICS_PORT": "0",
        "ENISHI_LOG_LEVEL": "WARNING",
        "ENISHI_KAFKA_LINGER_MS": str(LINGER_MS),
        "ENISHI_API_KEYS": API_KEY.entry(),
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env)
    target = f"127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60):
            while not await probes.grpc_health(target):
                if proc.poll() is not None:
                    raise RuntimeError(f"ingest exited with {proc.returncode}")
                await asyncio.sleep(0.2)
        yield IngestProcess(target, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def batch_track(target: str, batches: list[bytes], load: Load) -> float:
    """Events/s accepted through BatchTrack, each call acknowledged by Kafka."""
    async with grpc_client.aio_channel(target, CLIENT) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/enishi.v1.IngestService/BatchTrack"
        )
        await call(batches[0], timeout=60)  # warm up: connections, first identities
        queue = list(reversed(batches))
        accepted = 0

        async def worker() -> None:
            nonlocal accepted
            while queue:
                reply = pb.BatchTrackResponse.FromString(await call(queue.pop(), timeout=60))
                accepted += reply.accepted_count

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(load.concurrency)))
        elapsed = time.perf_counter() - started
    if accepted != load.events:
        raise RuntimeError(f"ingest accepted {accepted} of {load.events} events")
    return accepted / elapsed


def main() -> None:
    """`python -m bench.bench_ingest`: `python -m bench --only ingest`."""
    from bench.__main__ import main as run_all

    run_all([*sys.argv[1:], "--only", "ingest"])


if __name__ == "__main__":
    main()
