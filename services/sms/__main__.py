"""Wires the SMS channel service: settings → the REST SMS adapter → the channel framework."""

from __future__ import annotations

from enishi.channels.consumer import run_channel
from enishi.channels.sms import HttpSmsSender
from enishi.config import SmsSettings
from enishi.process import run


async def main() -> None:
    settings = SmsSettings()
    await run_channel("sms", settings, HttpSmsSender(settings))


if __name__ == "__main__":
    raise SystemExit(run(main, settings=SmsSettings(), service="sms"))
