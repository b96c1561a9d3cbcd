"""`python -m bench --quick` as CI runs it: it runs, and every figure of issue 6 is in its JSON.

Performance belongs in bench/, not in tests: nothing here asserts a time or a rate beyond
"it was measured". The one exact value checked is a correctness property the bench happens
to observe: events no journey names cause no Temporal call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]

# Issue 6: raw limits, then the project's figures, each with its ratio where it has a limit.
RATES = (
    "raw_produce",
    "raw_consume",
    "raw_hincrby",
    "raw_signal_with_start",
    "ingest",
    "processor",
    "enrollments",
)
MEASURED = (
    "trigger_dispatch_p50",
    "trigger_dispatch_p95",
    "trigger_dispatch_p99",
    "temporal_calls",
    "history_per_step",
    "history_per_step_max",
    "customer_bytes",
    "customer_bytes_p99",
    "ingest_rss",
    "stream_rss",
    "runtime_rss",
)
RATIOS = ("ingest", "processor", "enrollments")


def test_quick_bench_measures_every_figure_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "quick.json"
    docs = ROOT / "docs" / "benchmarks.md"
    docs_before = docs.read_text()
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    figures = json.loads(output.read_text())["figures"]
    for key in (*RATES, *MEASURED):
        assert figures[key]["samples"], key
        assert figures[key]["best"] > 0, key
    for key in RATIOS:
        assert figures[key]["ratio"] is not None and figures[key]["ratio"] > 0, key
    assert figures["temporal_calls_ignored"]["samples"] == [0]
    # The table the command prints names every figure; a quick run leaves the docs alone.
    for key in (*RATES, *MEASURED):
        assert figures[key]["label"] in run.stdout, key
    assert docs.read_text() == docs_before
