"""`enishi journey validate FILE...`: check journey sources like a compiler would."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from enishi.journeys import Severity, validate

app = typer.Typer(help="Write, check and run journeys.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_STYLES = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "blue"}


@app.command("validate")
def validate_command(
    files: Annotated[list[Path], typer.Argument(help="Journey sources (YAML or JSON).")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
) -> None:
    """Report every mistake as `file:line:col: severity: message (path)`; exit 1 on errors."""
    counts = dict.fromkeys(Severity, 0)
    for file in files:
        try:
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            err.print(f"{file}: [red]error[/red]: cannot read: {exc}", markup=True)
            counts[Severity.ERROR] += 1
            continue
        result = validate(source)
        for diagnostic in result.diagnostics:
            counts[diagnostic.severity] += 1
            line = diagnostic.format(str(file))
            out.print(line, style=_STYLES[diagnostic.severity], markup=False)
    errors, warnings = counts[Severity.ERROR], counts[Severity.WARNING]
    summary = f"{len(files)} file(s): {errors} error(s), {warnings} warning(s)"
    failed = errors > 0 or (strict and warnings > 0)
    err.print(summary, style="red" if failed else "green", markup=False)
    if failed:
        raise typer.Exit(1)
