"""The fault suite's report: its counts printed in pytest's summary, with or without `-s`."""

from __future__ import annotations

import pytest

REPORT = pytest.StashKey[list[str]]()


@pytest.fixture
def fault_report(pytestconfig: pytest.Config) -> list[str]:
    """Lines the test appends; printed in the terminal summary under "fault suite"."""
    return pytestconfig.stash.setdefault(REPORT, [])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(REPORT, [])
    if lines:
        terminalreporter.section("fault suite")
        for line in lines:
            terminalreporter.write_line(line)
