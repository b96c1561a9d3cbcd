"""Wires the LINE channel service: settings → the push adapter and the webhook → the framework."""

from __future__ import annotations

from enishi.channels.consumer import run_channel
from enishi.channels.line import LinePushSender
from enishi.config import LineSettings
from enishi.process import run
from services.line.webhook import remember_last_dispatch, webhook_companion


async def main() -> None:
    settings = LineSettings()
    await run_channel(
        "line",
        settings,
        LinePushSender(settings),
        companions=[webhook_companion(settings)],
        on_sent=remember_last_dispatch,
    )


if __name__ == "__main__":
    raise SystemExit(run(main, settings=LineSettings(), service="line"))
