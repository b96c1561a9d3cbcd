"""Wires the push channel service: settings → the FCM adapter → the channel framework."""

from __future__ import annotations

from enishi.channels.consumer import run_channel
from enishi.channels.push import FcmSender
from enishi.config import PushSettings
from enishi.process import run


async def main() -> None:
    settings = PushSettings()
    await run_channel("push", settings, FcmSender(settings))


if __name__ == "__main__":
    raise SystemExit(run(main, settings=PushSettings(), service="push"))
