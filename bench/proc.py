"""What Linux's /proc says about the processes a benchmark runs: peak RSS and CPU time.

`VmHWM` in `/proc/<pid>/status` is a process's peak RSS since it started, or since its peak
was reset by writing `5` to `/proc/<pid>/clear_refs` (Linux 4.0+), which is how one phase of
the benchmark process is measured apart from the others. CPU time is `utime + stime` of
`/proc/<pid>/stat` (every thread). Elsewhere these answer None.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_HWM = re.compile(r"^VmHWM:\s+(\d+) kB$", re.MULTILINE)
_RSS = re.compile(r"^VmRSS:\s+(\d+) kB$", re.MULTILINE)
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak RSS of `pid` (this process by default) in MiB, or None when /proc cannot say."""
    return _status_mb(pid, _HWM)


def rss_mb(pid: int | str = "self") -> float | None:
    """RSS of `pid` now, in MiB, or None when /proc cannot say."""
    return _status_mb(pid, _RSS)


def _status_mb(pid: int | str, field: re.Pattern[str]) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = field.search(status)
    return int(found.group(1)) / 1024 if found else None


def reset_peak_rss() -> bool:
    """Start this process's peak RSS over from its current RSS; False when not supported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU seconds `pid` has used so far, or None when /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU seconds several processes used between `start()` and `stop()`, by name."""

    def __init__(self, pids: Mapping[str, int | str]) -> None:
        self._pids = dict(pids)
        self._started: dict[str, float] = {}

    def start(self) -> None:
        self._started = {
            name: cpu for name, pid in self._pids.items() if (cpu := cpu_seconds(pid)) is not None
        }

    def stop(self) -> dict[str, float]:
        used = {}
        for name, before in self._started.items():
            now = cpu_seconds(self._pids[name])
            if now is not None:
                used[name] = now - before
        return used
