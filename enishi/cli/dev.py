"""`enishi dev up|status|down`: the embedded local stack."""

from __future__ import annotations

import asyncio
import signal

import typer
from rich.console import Console
from rich.table import Table

from enishi.config import DevStackSettings
from enishi.devstack.probes import quiet_client_logs
from enishi.devstack.supervisor import PartStatus, StackError, Supervisor

app = typer.Typer(help="Run the whole stack locally on embedded servers (no Docker).")
console = Console(stderr=True)


def _supervisor() -> Supervisor:
    quiet_client_logs()
    return Supervisor(DevStackSettings(), progress=lambda line: console.print(f"  {line}"))


def status_table(rows: list[PartStatus]) -> Table:
    table = Table(title="enishi local stack")
    for column in ("part", "kind", "pid", "ports", "health", "log"):
        table.add_column(column)
    for row in rows:
        if row.healthy:
            health = "[green]healthy[/green]"
        elif row.running:
            health = "[yellow]running, not healthy[/yellow]"
        else:
            health = "[red]down[/red]"
        table.add_row(row.name, row.kind, str(row.pid or "-"), row.ports, health, str(row.log))
    return table


@app.command()
def up(
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Return once healthy and leave the stack running."
    ),
) -> None:
    """Start Kafka (Tansu), Temporal, Redis (Valkey) and every enishi service."""
    supervisor = _supervisor()
    console.print(f"[bold]enishi dev up[/bold] (state in {supervisor.state_dir})")
    try:
        started = asyncio.run(supervisor.up())
    except StackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    rows = asyncio.run(supervisor.status())
    console.print(status_table(rows))
    if not started:
        console.print("The stack is already running. `enishi dev down` stops it.")
        return
    if detach:
        console.print("Stack is up. `enishi dev status` shows it, `enishi dev down` stops it.")
        return
    console.print("Stack is up. Ctrl-C stops everything.")
    asyncio.run(_watch_then_stop(supervisor))


async def _watch_then_stop(supervisor: Supervisor) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reported: set[str] = set()
    while not stop.is_set():
        recorded = supervisor.recorded()
        for name in set(recorded) - set(supervisor.alive()) - reported:
            reported.add(name)
            console.print(f"[red]{name} exited[/red]; its log: {supervisor.log_path(name)}")
        try:
            await asyncio.wait_for(stop.wait(), timeout=2.0)
        except TimeoutError:
            continue
    console.print("stopping…")
    await supervisor.down()
    console.print("stopped.")


@app.command()
def status() -> None:
    """Show each part: pid, ports, health. Exits 1 unless every part is healthy."""
    supervisor = _supervisor()
    rows = asyncio.run(supervisor.status())
    console.print(status_table(rows))
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop every part the stack started (services first); no process is left behind."""
    supervisor = _supervisor()
    stopped = asyncio.run(supervisor.down())
    if stopped:
        console.print(f"stopped: {', '.join(stopped)}")
    else:
        console.print("nothing was running.")
