"""Wires the provider sandbox: settings → Redis, Kafka → SMTP and HTTP servers, until stopped."""

from __future__ import annotations

import asyncio

from enishi.config import SandboxSettings
from enishi.process import run
from enishi.service_clients import service_clients
from services.sandbox.app import Sandbox


async def main() -> None:
    settings = SandboxSettings()
    async with service_clients(settings) as clients:
        sandbox = Sandbox(settings, clients.redis, clients.producer)
        try:
            await sandbox.start()
            clients.ready = True
            await asyncio.Event().wait()
        finally:
            await sandbox.stop()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=SandboxSettings(), service="sandbox"))
