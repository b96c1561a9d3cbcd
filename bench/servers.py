"""The servers a benchmark runs against: Tansu and Valkey on free ports, or given ones.

Only the two servers the hot paths use (no Temporal, whose idle work would share the two
cores); they are the local stack's own parts (`enishi.devstack.parts`), Valkey with its
append-only file as in `enishi dev up`.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from enishi import kafka, topics
from enishi.auth import ApiKey, Role
from enishi.config import CommonSettings, DevStackSettings, GrpcClientSettings
from enishi.devstack.parts import kafka_bootstrap, redis_url, server_parts
from enishi.devstack.ports import free_port

_PARTS = ("kafka", "redis")

# The benchmark's own API key: the services it starts accept it and its clients send it, so
# calls pay for authentication as they do in production.
API_KEY: Final = ApiKey("bench", frozenset({Role.INGEST, Role.DESIGNER}), secrets.token_hex(24))
CLIENT: Final = GrpcClientSettings(api_key=SecretStr(API_KEY.secret))
"""Settings for `enishi.grpc_client` channels sending API_KEY."""
_START_SECONDS = 60.0


@dataclass(frozen=True)
class Servers:
    """Where the benchmark's Kafka and Redis listen."""

    kafka: str
    redis: str
    partitions: int


@asynccontextmanager
async def servers(
    *, kafka_bootstrap_servers: str = "", redis: str = "", partitions: int = 4
) -> AsyncIterator[Servers]:
    """Started Tansu and Valkey (stopped on exit), or the given ones when both are set."""
    if kafka_bootstrap_servers and redis:
        yield Servers(kafka_bootstrap_servers, redis, partitions)
        return
    with tempfile.TemporaryDirectory(prefix="enishi-bench-") as state:
        settings = DevStackSettings.model_validate(
            {
                "state_dir": Path(state),
                "kafka_port": free_port(),
                "temporal_port": free_port(),
                "temporal_ui_port": free_port(),
                "redis_port": free_port(),
                "partitions": partitions,
            }
        )
        (Path(state) / "data").mkdir()
        parts = [p for p in server_parts(settings) if p.name in _PARTS]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for part in parts:
                with (Path(state) / f"{part.name}.log").open("ab") as log:
                    procs.append(
                        subprocess.Popen(
                            part.argv,
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            cwd=state,
                            start_new_session=True,
                        )
                    )
            for part, proc in zip(parts, procs, strict=True):
                deadline = time.monotonic() + _START_SECONDS
                while not await part.probe():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"bench: {part.name} did not start (see {state})")
                    await asyncio.sleep(0.2)
            bootstrap = kafka_bootstrap(settings)
            await kafka.ensure_topics(
                CommonSettings(kafka_bootstrap=bootstrap),
                [topics.TOUCHPOINTS],
                partitions=partitions,
            )
            yield Servers(bootstrap, redis_url(settings), partitions)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
