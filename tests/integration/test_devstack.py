"""`enishi dev up|status|down` as a user runs them: real processes, real ports."""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from enishi.catalog import SERVICES
from enishi.devstack.ports import free_port, in_use


def _service_port_offset() -> int:
    """An offset that puts every catalogue service port on a free port."""
    for _ in range(200):
        offset = random.randrange(1000, 9000)
        wanted = [s.metrics_port + offset for s in SERVICES]
        wanted += [s.grpc_port + offset for s in SERVICES if s.grpc_port is not None]
        wanted += [s.default_port(f) + offset for s in SERVICES for f in s.extra_ports]
        if not any(in_use(p) for p in wanted):
            return offset
    raise RuntimeError("no free service port offset found")


def _env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "ENISHI_DEV_STATE_DIR": str(state_dir),
        "ENISHI_DEV_KAFKA_PORT": str(free_port()),
        "ENISHI_DEV_TEMPORAL_PORT": str(free_port()),
        "ENISHI_DEV_TEMPORAL_UI_PORT": str(free_port()),
        "ENISHI_DEV_REDIS_PORT": str(free_port()),
        "ENISHI_DEV_SERVICE_PORT_OFFSET": str(_service_port_offset()),
        "ENISHI_DEV_PARTITIONS": "1",
        "COLUMNS": "200",
    }
    env.update(extra)
    return env


def _enishi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enishi.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_dev_up_twice_reports_running_and_down_leaves_no_process(tmp_path: Path) -> None:
    env = _env(tmp_path / "state")
    first = _enishi(env, "dev", "up", "--detach")
    assert first.returncode == 0, first.stderr
    try:
        status = _enishi(env, "dev", "status")
        assert status.returncode == 0, status.stderr
        for part in ("kafka", "temporal", "redis", *(s.name for s in SERVICES)):
            assert part in status.stderr
        assert "down" not in status.stderr and "not healthy" not in status.stderr

        # Auth is on: the stack made its keys privately, and the CLI found the admin one.
        keys = tmp_path / "state" / "api-keys"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
        no_key = {k: v for k, v in env.items() if k != "ENISHI_API_KEY"}
        listed = _enishi(no_key, "journey", "list")
        assert listed.returncode == 0, listed.stderr

        second = _enishi(env, "dev", "up", "--detach")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr

        state = json.loads((tmp_path / "state" / "stack.json").read_text())
        pids = {int(entry["pid"]) for entry in state["parts"].values()}
        assert len(pids) == 3 + len(SERVICES)
        every_process = pids | {d for pid in pids for d in _descendants(pid)}
    finally:
        down = _enishi(env, "dev", "down")
    assert down.returncode == 0, down.stderr
    left = sorted(pid for pid in every_process if _running(pid))
    assert left == [], f"processes left behind: {left}"
    after = _enishi(env, "dev", "status")
    assert after.returncode == 1


def test_port_in_use_names_the_port_and_the_setting(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = _env(tmp_path / "state", ENISHI_DEV_KAFKA_PORT=str(port))
        result = _enishi(env, "dev", "up", "--detach")
    assert result.returncode == 1
    assert f"port {port}" in result.stderr
    assert "ENISHI_DEV_KAFKA_PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["status", "down"])
def test_status_and_down_on_a_stack_never_started_are_clear(tmp_path: Path, command: str) -> None:
    result = _enishi(_env(tmp_path / "never"), "dev", command)
    assert "Traceback" not in result.stderr
    if command == "down":
        assert result.returncode == 0 and "nothing was running" in result.stderr
    else:
        assert result.returncode == 1 and "down" in result.stderr
