"""Tracing turned on for one test, with spans kept in memory (unit and integration tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from enishi import tracing
from enishi.config import CommonSettings


@contextlib.contextmanager
def traced(*, sample_ratio: float = 1.0) -> Iterator[InMemorySpanExporter]:
    """Tracing on, as `configure_tracing` sets it up in a service, exporting to memory."""
    exporter = InMemorySpanExporter()
    settings = CommonSettings(tracing_enabled=True, tracing_sample_ratio=sample_ratio)
    assert tracing.configure_tracing(settings, "test", processor=SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans called `name`."""
    return [span for span in spans if span.name == name]


def ancestry(spans: Sequence[ReadableSpan], leaf: ReadableSpan) -> list[ReadableSpan]:
    """`leaf` and its parents, nearest first, as far as the exported spans go."""
    by_id = {span.context.span_id: span for span in spans if span.context is not None}
    chain = [leaf]
    while chain[-1].parent is not None and chain[-1].parent.span_id in by_id:
        chain.append(by_id[chain[-1].parent.span_id])
    return chain
