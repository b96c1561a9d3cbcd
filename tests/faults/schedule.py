"""The faults, one after another while the load runs, and the orchestrator's part.

Each fault is `Supervisor.restart(part, signal)`: stop (SIGKILL: a crash; SIGTERM: a restart
with data kept), start again, wait until healthy; then a short pause with the whole stack up
before the next. Beside them runs what docker-compose's `restart: unless-stopped` and
Kubernetes do in production: a service that exits on its own (it crashed, or gave up on a
dependency that was away) is started again, and the report names it with its last error.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from enishi.devstack.supervisor import Supervisor

WATCH_SECONDS = 1.0


@dataclass(frozen=True)
class Fault:
    """Stop `part` with `signal`, then start it again."""

    part: str
    signal: signal.Signals


@dataclass
class FaultSchedule:
    """Strikes `faults` in order once the load is under way; restarts parts that die."""

    supervisor: Supervisor
    faults: Sequence[Fault]
    fed: Callable[[], int]
    """How many customers the load has told enishi about so far (for the report)."""
    lead_seconds: float = 5.0
    gap_seconds: float = 2.0
    struck: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    finished_at: float | None = None
    _one_at_a_time: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def strike(self) -> None:
        """Every fault in order, each after the stack is healthy again from the one before."""
        started = time.monotonic()
        await asyncio.sleep(self.lead_seconds)
        for fault in self.faults:
            async with self._one_at_a_time:
                at, fed = time.monotonic() - started, self.fed()
                await self.supervisor.restart(fault.part, fault.signal)
                took = time.monotonic() - started - at
            self.struck.append(
                f"{fault.part} {fault.signal.name} at {at:.0f}s ({fed} customers fed), "
                f"healthy again after {took:.1f}s"
            )
            await asyncio.sleep(self.gap_seconds)
        self.finished_at = time.monotonic()

    async def watch(self) -> None:
        """Forever: start again any part that is not running (and is not being restarted)."""
        names = [part.name for part in self.supervisor.parts()]
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            async with self._one_at_a_time:
                alive = self.supervisor.alive()
                for name in names:
                    if name not in alive:
                        self.crashed.append(f"{name}: {self._last_error(name)}")
                        await self.supervisor.restart(name)

    def _last_error(self, name: str) -> str:
        """The last line of the exception in the part's last `process.crashed` log line."""
        for line in reversed(self.supervisor.log_tail(name, lines=50).splitlines()):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "process.crashed":
                lines = str(entry.get("exception", "")).strip().splitlines()
                return lines[-1] if lines else "process.crashed"
        return "exited without logging a crash"
