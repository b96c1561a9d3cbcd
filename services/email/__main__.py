"""Wires the email channel service: settings → the SMTP adapter and the unsubscribe endpoint →
the channel framework."""

from __future__ import annotations

from enishi.channels.consumer import run_channel
from enishi.channels.email import SmtpSender
from enishi.config import EmailSettings
from enishi.process import run
from services.email.unsubscribe import unsubscribe_companion


async def main() -> None:
    settings = EmailSettings()
    await run_channel(
        "email",
        settings,
        SmtpSender(settings),
        companions=[unsubscribe_companion(settings)],
    )


if __name__ == "__main__":
    raise SystemExit(run(main, settings=EmailSettings(), service="email"))
