"""Running a process: logging set up, SIGTERM/SIGINT turned into a graceful stop, clear exit codes.

Every `services/<name>/__main__.py` ends in `process.run(main, settings=..., service=...)`
(gRPC services through `enishi.grpc_server.run`). On the first SIGTERM or SIGINT the
`main` task is cancelled, so its `finally` blocks stop consumers, flush producers and
close clients; a second signal cancels again, interrupting a shutdown that hangs.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Final

import structlog

from enishi import tracing
from enishi.config import CommonSettings
from enishi.errors import ConfigurationError, PortInUseError
from enishi.logs import configure_logging

Main = Callable[[], Coroutine[Any, Any, None]]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
EXIT_OK: Final = 0
EXIT_CRASHED: Final = 1
EXIT_CANNOT_START: Final = 2

log = structlog.get_logger(__name__)


async def run_until_signal(main: Main) -> None:
    """Run `main()` until it returns or a stop signal cancels it; a signal is a clean end."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(main(), name="main")
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if task.done():
            return
        event = "process.stopping" if not received else "process.stopping_again"
        received.append(sig)
        log.info(event, signal=sig.name)
        task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def run(main: Main, *, settings: CommonSettings, service: str) -> int:
    """Configure logging and tracing, run `main` until it ends or a signal stops it; the exit code.

    Use as `raise SystemExit(run(main, settings=settings, service="ingest"))`. A port that
    cannot be bound, or a setting that cannot work (no API keys, a missing certificate), ends
    with one readable log line and exit code 2, not a traceback.
    """
    configure_logging(settings.log_level, settings.log_format, service)
    tracing.configure_tracing(settings, service)
    log.info("process.starting", tracing=tracing.enabled())
    try:
        asyncio.run(run_until_signal(main))
    except PortInUseError as exc:
        log.error("process.cannot_start", reason=str(exc), port=exc.port, env_var=exc.env_var)
        return EXIT_CANNOT_START
    except ConfigurationError as exc:
        log.error("process.cannot_start", reason=str(exc), env_var=exc.env_var)
        return EXIT_CANNOT_START
    except Exception:
        log.exception("process.crashed")
        return EXIT_CRASHED
    finally:
        tracing.shutdown_tracing()  # exports the spans still queued
    log.info("process.stopped")
    return EXIT_OK
