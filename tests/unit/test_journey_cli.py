"""`enishi journey validate` prints compiler-style findings and fails on errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from enishi.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "journeys"
runner = CliRunner()


def test_validate_passes_on_the_examples() -> None:
    result = runner.invoke(app, ["journey", "validate", *map(str, sorted(EXAMPLES.glob("*.yaml")))])
    assert result.exit_code == 0, result.output
    assert "0 error(s), 0 warning(s)" in result.output


def test_validate_prints_file_line_column_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: bad\nname: Bad\ndesigner: t\ntrigger: {event: order.completed}\n"
        "steps:\n  - id: a\n    wait_for: {event: message.replied, timeout: 0d}\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["journey", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:7:49: error: duration '0d' is zero" in result.output
    assert "(steps[0].wait_for.timeout)" in result.output
    assert "1 error(s)" in result.output


def test_validate_strict_fails_on_warnings(tmp_path: Path) -> None:
    warn = tmp_path / "warn.yaml"
    warn.write_text(
        "id: warn\nname: W\ndesigner: t\ntrigger: {event: order.completed}\nholdout: 0.1\n"
        "steps: [{id: x, exit: {}}]\n",
        encoding="utf-8",
    )
    assert runner.invoke(app, ["journey", "validate", str(warn)]).exit_code == 0
    assert runner.invoke(app, ["journey", "validate", "--strict", str(warn)]).exit_code == 1


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["journey", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output
