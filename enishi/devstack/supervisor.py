"""Starts, watches and stops the local stack's processes through a state directory.

`<state_dir>/stack.json` records each running part's pid and command, so `status` and `down`
work from any later CLI call; `<state_dir>/logs/<part>.log` holds each part's output and
`<state_dir>/data/` the Temporal SQLite file and the Valkey append-only file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from enishi import topics
from enishi.config import CommonSettings, DevStackSettings
from enishi.devstack import api_keys, ports
from enishi.devstack.parts import (
    Part,
    all_parts,
    inherited_env,
    kafka_bootstrap,
    temporal_address,
)
from enishi.kafka import ensure_topics
from enishi.temporal import register_search_attributes

STATE_FILE = "stack.json"
STOP_GRACE_SECONDS = 15.0

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot be brought up or down; the message says what to do."""


@dataclass(frozen=True)
class Recorded:
    """A part as the state file remembers it."""

    name: str
    pid: int
    argv0: str


@dataclass(frozen=True)
class PartStatus:
    """One row of `enishi dev status`."""

    name: str
    kind: str
    pid: int | None
    ports: str
    running: bool
    healthy: bool
    log: Path


def _silent(_: str) -> None:
    return None


def _reap(pid: int) -> bool:
    """Collect `pid` if it is our exited child; True when it was."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def pid_alive(pid: int, argv0: str) -> bool:
    """True when `pid` runs and is still the process we started (not a reused pid)."""
    if _reap(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # no procfs (macOS): the signal check is all we have
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    if not args or not args[0]:
        _reap(pid)  # a zombie has an empty command line
        return False
    return os.path.basename(argv0).encode() in b" ".join(args[:3])


class Supervisor:
    """The local stack rooted at one state directory."""

    def __init__(
        self,
        settings: DevStackSettings,
        *,
        services: bool = True,
        progress: Progress = _silent,
    ) -> None:
        self.settings = settings
        self.with_services = services
        self.progress = progress
        self.state_dir = settings.state_dir.resolve()
        self.log_dir = self.state_dir / "logs"
        self.data_dir = self.state_dir / "data"

    # -- state ---------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def parts(self) -> list[Part]:
        return all_parts(self.settings, services=self.with_services)

    def recorded(self) -> dict[str, Recorded]:
        if not self.state_path.exists():
            return {}
        try:
            raw = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return {
            name: Recorded(name=name, pid=int(entry["pid"]), argv0=str(entry["argv0"]))
            for name, entry in raw.get("parts", {}).items()
        }

    def _write_state(self, running: dict[str, Recorded]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "settings": self.settings.model_dump(mode="json"),
            "parts": {r.name: {"pid": r.pid, "argv0": r.argv0} for r in running.values()},
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(self.state_path)

    def alive(self) -> dict[str, Recorded]:
        return {n: r for n, r in self.recorded().items() if pid_alive(r.pid, r.argv0)}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # -- up ------------------------------------------------------------------------------

    async def up(self) -> bool:
        """Start every part and wait until each is healthy.

        Returns False (and starts nothing) when the whole stack already runs; raises
        StackError when it half runs, a port is taken, or a part fails to become healthy.
        """
        parts = self.parts()
        alive = self.alive()
        if alive:
            missing = [p.name for p in parts if p.name not in alive]
            if not missing:
                return False
            raise StackError(
                f"the stack is partly running (missing: {', '.join(missing)}); "
                "run `enishi dev down` first"
            )
        self._check_ports(parts)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        running: dict[str, Recorded] = {}
        try:
            servers = [p for p in parts if p.kind == "server"]
            services = [p for p in parts if p.kind == "service"]
            await self._start_all(servers, running)
            # Also on a SQLite file made before an attribute joined the contract.
            temporal = await Client.connect(temporal_address(self.settings))
            await register_search_attributes(temporal)
            created = await ensure_topics(
                CommonSettings(kafka_bootstrap=kafka_bootstrap(self.settings)),
                topics.all_topics(),
                partitions=self.settings.partitions,
            )
            self.progress(
                f"topics: {len(created)} created, "
                f"{len(topics.all_topics()) - len(created)} already there"
            )
            if services:
                keys = api_keys.ensure(self.state_dir)
                self.progress(f"API keys: {keys} (one per role; the CLI uses the admin key)")
            await self._start_all(services, running)
        except BaseException:
            self.progress("start failed; stopping what was started")
            await self._stop(running)
            self._write_state({})
            raise
        return True

    def _check_ports(self, parts: list[Part]) -> None:
        taken = [
            f"port {port.number} ({part.name} {port.label}) is in use: "
            f"set {port.setting} to move it"
            for part in parts
            for port in part.ports
            if ports.in_use(port.number)
        ]
        if taken:
            raise StackError("; ".join(taken))

    async def _start_all(self, parts: list[Part], running: dict[str, Recorded]) -> None:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for part in parts:
            self.progress(f"{part.name}: starting on port {part.main_port}")
            procs[part.name] = self._spawn(part)
            running[part.name] = Recorded(part.name, procs[part.name].pid, part.argv[0])
            self._write_state(running)
        await asyncio.gather(*(self._wait_healthy(p, procs[p.name]) for p in parts))

    def _spawn(self, part: Part) -> subprocess.Popen[bytes]:
        env = {**inherited_env(os.environ), **dict(part.env)}
        with self.log_path(part.name).open("ab") as log:
            # Own session: the terminal's Ctrl-C reaches the CLI only, which then stops
            # every part in order; `down` signals the whole process group.
            return subprocess.Popen(
                part.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,
            )

    async def _wait_healthy(self, part: Part, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_seconds
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise StackError(
                    f"{part.name} exited with code {proc.returncode} while starting; "
                    f"last log lines:\n{self.log_tail(part.name)}"
                )
            if await part.probe():
                self.progress(f"{part.name}: healthy in {time.monotonic() - started:.1f}s")
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{part.name} not healthy after {self.settings.start_timeout_seconds:.0f}s "
                    f"(ENISHI_DEV_START_TIMEOUT_SECONDS); last log lines:\n"
                    f"{self.log_tail(part.name)}"
                )
            await asyncio.sleep(0.25)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_path(name)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- status --------------------------------------------------------------------------

    async def status(self) -> list[PartStatus]:
        recorded = self.recorded()
        parts = self.parts()

        async def one(part: Part) -> PartStatus:
            rec = recorded.get(part.name)
            running = rec is not None and pid_alive(rec.pid, rec.argv0)
            healthy = running and await part.probe()
            return PartStatus(
                name=part.name,
                kind=part.kind,
                pid=rec.pid if rec else None,
                ports=", ".join(f"{p.label} {p.number}" for p in part.ports),
                running=running,
                healthy=healthy,
                log=self.log_path(part.name),
            )

        return list(await asyncio.gather(*(one(p) for p in parts)))

    # -- restart -------------------------------------------------------------------------

    async def restart(self, name: str, sig: signal.Signals = signal.SIGTERM) -> Recorded:
        """Stop one running part with `sig`, start it again, and wait until it is healthy.

        SIGKILL is a crash; SIGTERM a graceful stop (SIGKILL after the grace). A part that is
        not running is just started. The Temporal SQLite file and the Valkey append-only file
        survive a restart; Tansu keeps topics in memory, so restarting `kafka` empties it.
        """
        part = next((p for p in self.parts() if p.name == name), None)
        if part is None:
            known = ", ".join(p.name for p in self.parts())
            raise StackError(f"no part named {name!r} (parts: {known})")
        rec = self.recorded().get(name)
        if rec is not None:
            await self._stop_one(rec, sig)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = self._spawn(part)
        started = Recorded(name, proc.pid, part.argv[0])
        self._write_state({**self.recorded(), name: started})
        self.progress(f"{name}: restarted (pid {proc.pid})")
        await self._wait_healthy(part, proc)
        return started

    # -- down ----------------------------------------------------------------------------

    async def down(self) -> list[str]:
        """Stop every recorded part (services first), then forget them. Returns their names."""
        recorded = self.recorded()
        stopped = await self._stop(recorded)
        self._write_state({})
        return stopped

    async def _stop(self, running: dict[str, Recorded]) -> list[str]:
        kinds = {p.name: p.kind for p in self.parts()}
        servers = [r for r in running.values() if kinds.get(r.name) == "server"]
        services = [r for r in running.values() if kinds.get(r.name) != "server"]
        stopped: list[str] = []
        for group in (services, servers):
            results = await asyncio.gather(*(self._stop_one(r) for r in group))
            stopped += [
                r.name for r, was_running in zip(group, results, strict=True) if was_running
            ]
        return stopped

    async def _stop_one(self, rec: Recorded, sig: signal.Signals = signal.SIGTERM) -> bool:
        if not pid_alive(rec.pid, rec.argv0):
            return False
        self.progress(f"{rec.name}: stopping (pid {rec.pid}, {sig.name})")
        _signal_group(rec.pid, sig)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if not pid_alive(rec.pid, rec.argv0):
                return True
            await asyncio.sleep(0.1)
        self.progress(f"{rec.name}: did not stop in {STOP_GRACE_SECONDS:.0f}s, killing")
        _signal_group(rec.pid, signal.SIGKILL)
        while pid_alive(rec.pid, rec.argv0):
            await asyncio.sleep(0.05)
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
