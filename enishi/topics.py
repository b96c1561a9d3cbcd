"""Kafka topic names: defined here once, documented in docs/topics.md."""

from typing import Final

TOUCHPOINTS: Final = "touchpoints"
CHANNELS: Final = ("email", "line", "sms", "push")
DLQ_SUFFIX: Final = ".dlq"


def dispatch(channel: str) -> str:
    """The topic a channel service consumes: `dispatch.<channel>`."""
    if channel not in CHANNELS:
        raise ValueError(f"channel: unknown channel {channel!r}, expected one of {CHANNELS}")
    return f"dispatch.{channel}"


def dlq(topic: str) -> str:
    """The dead-letter topic for records of `topic` that cannot be processed."""
    return f"{topic}{DLQ_SUFFIX}"


def primary_topics() -> tuple[str, ...]:
    """Every topic records are produced to in normal operation."""
    return (TOUCHPOINTS, *(dispatch(c) for c in CHANNELS))


def all_topics() -> tuple[str, ...]:
    """Every topic the platform needs, dead-letter topics included."""
    primary = primary_topics()
    return (*primary, *(dlq(t) for t in primary))
