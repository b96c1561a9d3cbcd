"""OpenTelemetry tracing: one trace per touchpoint, across gRPC, Kafka, Temporal and providers.

Off by default (`ENISHI_TRACING_ENABLED`). Off, every helper returns at its first test, no
span or carrier is built and no trace header is added (a touchpoint's own `trace` field is
still mirrored into its record's headers, see `TouchpointPublisher`). On, `configure_tracing`
installs a TracerProvider exporting over OTLP/gRPC, and context travels as W3C
`traceparent`/`tracestate` Kafka headers and gRPC metadata, and through Temporal with its
`TracingInterceptor` (`temporal_interceptors`). docs/tracing.md has the whole path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span
from opentelemetry.trace import SpanKind as SpanKind  # re-exported for callers
from opentelemetry.trace import Status as Status  # re-exported for callers
from opentelemetry.trace import StatusCode as StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from enishi.config import CommonSettings
from enishi.v1 import touchpoint_pb2

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
INSTRUMENTATION: Final = "enishi"

Headers = Sequence[tuple[str, bytes]]
Attributes = dict[str, AttributeValue]

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NOOP: Final = trace.NoOpTracer()


class _State:
    """What `configure_tracing` installed; `enabled` is the one test every hot path makes."""

    enabled: bool = False
    provider: TracerProvider | None = None
    tracer: trace.Tracer = _NOOP
    global_set: bool = False


_state = _State()


def enabled() -> bool:
    """True while tracing is configured (between `configure_tracing` and `shutdown_tracing`)."""
    return _state.enabled


def configure_tracing(
    settings: CommonSettings, service_name: str, *, processor: SpanProcessor | None = None
) -> bool:
    """Install a TracerProvider for `service_name` when `settings.tracing_enabled`; True if so.

    Sampling is parent-based: a caller's sampling decision is followed, new traces are
    recorded at `tracing_sample_ratio`. Spans go through `processor` (tests pass a
    SimpleSpanProcessor over an in-memory exporter), else in batches to the OTLP/gRPC
    collector at `otlp_endpoint` (`http://` means without TLS).
    """
    if not settings.tracing_enabled:
        return False
    shutdown_tracing()
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)),
    )
    if processor is None:
        # Imported here: the exporter loads grpc and its protos, which a process that never
        # traces should not pay for.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    provider.add_span_processor(processor)
    if not _state.global_set:
        # For third-party instrumentation; enishi's own spans use `tracer()`. The API allows
        # setting the global provider once per process.
        trace.set_tracer_provider(provider)
        _state.global_set = True
    _state.provider = provider
    _state.tracer = provider.get_tracer(INSTRUMENTATION)
    _state.enabled = True
    return True


def shutdown_tracing() -> None:
    """Export what is pending and turn tracing off again (a no-op when it is off)."""
    provider = _state.provider
    _state.enabled = False
    _state.provider = None
    _state.tracer = _NOOP
    if provider is not None:
        provider.shutdown()


def tracer() -> trace.Tracer:
    """enishi's tracer: the configured provider's, or the API's no-op one."""
    return _state.tracer


def temporal_interceptors() -> list[Any]:
    """`[TracingInterceptor]` for `Client.connect(interceptors=...)` when on, else `[]`.

    On the client it covers the client's calls and every worker built on that client, so a
    worker must not be given it a second time.
    """
    if not _state.enabled:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(_state.tracer)]


def extract_context(
    headers: Iterable[tuple[str, bytes | str]] | None,
) -> otel_context.Context | None:
    """The context carried by Kafka record headers or gRPC metadata; None when there is none
    (or it is malformed) or tracing is off."""
    if not _state.enabled or not headers:
        return None
    carrier: dict[str, str] = {}
    for name, value in headers:
        if name in (TRACEPARENT, TRACESTATE):
            carrier[name] = value if isinstance(value, str) else bytes(value).decode("latin-1")
    return _extract(carrier)


def context_from_trace(traceparent: str, tracestate: str = "") -> otel_context.Context | None:
    """The context a `traceparent` (and `tracestate`) string names; None when empty or off."""
    if not _state.enabled or not traceparent:
        return None
    return _extract({TRACEPARENT: traceparent, TRACESTATE: tracestate})


def _extract(carrier: dict[str, str]) -> otel_context.Context | None:
    if TRACEPARENT not in carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def inject_headers(
    headers: list[tuple[str, bytes]], context: otel_context.Context | None = None
) -> list[tuple[str, bytes]]:
    """Append `traceparent`/`tracestate` of `context` (default: the current one) to `headers`.

    Adds nothing when tracing is off or there is no valid span; returns `headers`.
    """
    if _state.enabled:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context)
        headers.extend((name, value.encode()) for name, value in carrier.items())
    return headers


def current_trace() -> touchpoint_pb2.TraceContext | None:
    """The current span's context as a touchpoint's `trace`; None when off or no span."""
    if not _state.enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if TRACEPARENT not in carrier:
        return None
    return touchpoint_pb2.TraceContext(
        traceparent=carrier[TRACEPARENT], tracestate=carrier.get(TRACESTATE, "")
    )


def current_traceparent() -> str:
    """The current span's `traceparent`, or "" when off or no span."""
    current = current_trace()
    return current.traceparent if current is not None else ""


def trace_headers(trace_context: touchpoint_pb2.TraceContext) -> list[tuple[str, bytes]]:
    """The record headers that mirror a touchpoint's `trace` field."""
    headers = [(TRACEPARENT, trace_context.traceparent.encode())]
    if trace_context.tracestate:
        headers.append((TRACESTATE, trace_context.tracestate.encode()))
    return headers


def own_trace_headers(
    trace_field: touchpoint_pb2.TraceContext, current: touchpoint_pb2.TraceContext | None
) -> list[tuple[str, bytes]] | None:
    """The headers of a touchpoint that came with a `trace` of its own (a client set it).

    It keeps it: the event's consequences belong to the trace its producer chose, and the
    current span (the ingest call's) links to it. If it is the current span's own trace
    (the caller's context, sent both as metadata and in the event), or names no trace, the
    current span is its descendant and takes its place.
    """
    if current is not None:
        if trace_field.traceparent[3:35] in (current.traceparent[3:35], ""):
            trace_field.CopyFrom(current)
        else:
            linked = context_from_trace(trace_field.traceparent, trace_field.tracestate)
            current_span = trace.get_current_span()
            if linked is not None and current_span.is_recording():
                current_span.add_link(trace.get_current_span(linked).get_span_context())
    return trace_headers(trace_field) if trace_field.traceparent else None


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Attributes | None = None,
) -> Iterator[Span]:
    """A span, current inside the block, child of `parent` (default: the current span).

    An exception leaving the block marks it ERROR with the exception's type (never its
    message: it may hold personal data). Off, the block runs with the no-op span.
    """
    if not _state.enabled:
        yield trace.INVALID_SPAN
        return
    with _state.tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@contextlib.contextmanager
def attached(context: otel_context.Context | None) -> Iterator[None]:
    """Make `context` current inside the block (nothing happens for None)."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


class ActiveSpan:
    """A span made current by `begin_span` until `end()`, for code that cannot use `with`
    (the gRPC interceptor begins and ends a call in different methods)."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Span, token: object) -> None:
        self.span = span
        self._token = token

    def end(self, *, error: str | None = None) -> None:
        """End the span (ERROR with `error` when given) and restore the previous context."""
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]


def begin_span(
    name: str,
    *,
    kind: SpanKind,
    parent: otel_context.Context | None = None,
    attributes: Attributes | None = None,
) -> ActiveSpan | None:
    """Start a span and make it current; None when tracing is off. Pair with `end()`."""
    if not _state.enabled:
        return None
    started = _state.tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
    return ActiveSpan(started, otel_context.attach(trace.set_span_in_context(started)))


class RecordSpans:
    """One CONSUMER span per consumed record that carries a context, for a batch processed
    together: all start when added and end together with `end()`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._spans: list[Span] = []

    def add(
        self,
        record: Any,
        trace_field: touchpoint_pb2.TraceContext | None = None,
        attributes: Attributes | None = None,
    ) -> Span | None:
        """A span for `record`, child of the context in its headers (else in `trace_field`,
        the copy a touchpoint keeps in its payload); None when it carries none, or one
        whose caller chose not to sample it (the unsampled context then flows on as it is).

        With `trace_field`, the field is rewritten to the new span's context, so what the
        processor does next with the decoded message (a Temporal call) is its child.
        """
        parent = extract_context(getattr(record, "headers", None))
        if parent is None and trace_field is not None and trace_field.traceparent:
            parent = context_from_trace(trace_field.traceparent, trace_field.tracestate)
        if (
            parent is None
            or not trace.get_current_span(parent).get_span_context().trace_flags.sampled
        ):
            return None
        values: Attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        }
        if attributes:
            values.update(attributes)
        started = _state.tracer.start_span(
            self._name, context=parent, kind=SpanKind.CONSUMER, attributes=values
        )
        self._spans.append(started)
        if trace_field is not None:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, trace.set_span_in_context(started))
            trace_field.traceparent = carrier[TRACEPARENT]
            trace_field.tracestate = carrier.get(TRACESTATE, "")
        return started

    def end(self, error: BaseException | None = None) -> None:
        """End every span (ERROR with the exception's type when the batch failed)."""
        for started in self._spans:
            if error is not None:
                started.set_status(Status(StatusCode.ERROR, type(error).__name__))
            started.end()
        self._spans.clear()

    def __enter__(self) -> RecordSpans:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self.end(error)


def record_spans(name: str) -> RecordSpans | None:
    """A `RecordSpans` for one batch, or None when tracing is off (nothing per record then)."""
    return RecordSpans(name) if _state.enabled else None
