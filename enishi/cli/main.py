"""The `enishi` command: one entry point with a sub-command per concern."""

from __future__ import annotations

import typer

from enishi.cli import customer, demo, dev, journey, sandbox

app = typer.Typer(
    name="enishi",
    help="enishi: long-lived, one-to-one customer journeys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(journey.app, name="journey")
app.add_typer(customer.app, name="customer")
app.add_typer(sandbox.app, name="sandbox")
app.command(name="demo")(demo.demo)


if __name__ == "__main__":
    app()
