"""Wires the email channel service: settings → the SMTP adapter → the channel framework."""

from __future__ import annotations

from enishi.channels.consumer import run_channel
from enishi.channels.email import SmtpSender
from enishi.config import EmailSettings
from enishi.process import run


async def main() -> None:
    settings = EmailSettings()
    await run_channel("email", settings, SmtpSender(settings))


if __name__ == "__main__":
    raise SystemExit(run(main, settings=EmailSettings(), service="email"))
