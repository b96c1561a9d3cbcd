"""`enishi demo` as the README runs it: the whole local stack from `enishi dev up`, then the demo.

Every port is free (the service port offset moves the sandbox's too, so a stack already
running on this machine is left alone); the stack always goes down at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_devstack import _env

pytestmark = pytest.mark.timeout(420)

ACCOUNTING = re.compile(
    r"accounting: (?P<enrolled>\d+) enrollments = (?P<sent>\d+) sent \+ (?P<failed>\d+) failed "
    r"\+ (?P<deferred>\d+) deferred \+ (?P<skipped>\d+) skipped \+ (?P<dispatched>\d+) "
    r"dispatched \+ (?P<waiting>\d+) waiting \(adds up\)"
)


def _enishi(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enishi.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_ends_with_an_accounting_that_adds_up_and_a_360_view(tmp_path: Path) -> None:
    env = _env(tmp_path / "state")
    up = _enishi(env, "dev", "up", "--detach", timeout=180)
    assert up.returncode == 0, up.stderr
    try:
        demo = _enishi(env, "demo", "--customers", "60", "--timeout", "150", timeout=240)
    finally:
        down = _enishi(env, "dev", "down", timeout=120)
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output[-6000:]
    assert down.returncode == 0, down.stderr
    assert "What became of every enrollment" in output
    assert "Sends by channel, three ways" in output
    match = ACCOUNTING.search(output)
    assert match is not None, output[-6000:]
    numbers = {k: int(v) for k, v in match.groupdict().items()}
    enrolled = numbers.pop("enrolled")
    assert enrolled > 0 and numbers["sent"] > 0
    assert sum(numbers.values()) == enrolled
    # The 360 view of a customer who got a message, with its why (journey v<n> / step).
    assert "360 view of demo-" in output
    assert "message.sent" in output
    assert re.search(r"(first-order-thanks|welcome-series) v\d+ / (thanks|welcome)", output)
