"""enishi.tracing: W3C context in Kafka headers, off by default, parent-based sampling."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry import trace

from enishi import grpc_client, tracing
from enishi.config import CommonSettings
from enishi.grpc_server import GrpcServer
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import touchpoint_pb2
from tests import auth_support
from tests.tracing_support import named, traced
from tests.unit.test_grpc_server import SERVICE, Echo, health_check, settings, unary

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@dataclass(frozen=True)
class Record:
    """A consumed record as aiokafka hands it over (the fields a span reads)."""

    headers: list[tuple[str, bytes]]
    topic: str = "touchpoints"
    partition: int = 0
    offset: int = 7


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, Any]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: Any = None) -> object:
        self.records.append((key, value, headers))
        return object()

    def close(self) -> None:
        pass


@dataclass
class FakeProducer:
    """The part of AIOKafkaProducer TouchpointPublisher uses; remembers every record."""

    batches: list[FakeBatch] = field(default_factory=list)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBatch:
        batch = FakeBatch()
        self.batches.append(batch)
        return batch

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    @property
    def headers(self) -> list[Any]:
        return [headers for batch in self.batches for _, _, headers in batch.records]


def _touchpoint(customer_id: str = "c1") -> touchpoint_pb2.Touchpoint:
    return touchpoint_pb2.Touchpoint(event_id="e1", customer_id=customer_id, name="page.viewed")


def _parts(traceparent: str) -> tuple[int, int, int]:
    """Trace id, span id and the sampled bit of a `traceparent`."""
    _, trace_id, span_id, flags = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16), int(flags, 16) & 1


def test_a_context_injected_into_kafka_headers_is_extracted_as_the_same_span() -> None:
    with traced(), tracing.span("call") as span:
        headers = tracing.inject_headers([("other", b"kept")])
        [(name, value)] = [h for h in headers if h[0] == "traceparent"]
        context = tracing.extract_context(headers)
        assert context is not None
        extracted = trace.get_current_span(context).get_span_context()
        sent = span.get_span_context()

    assert headers[0] == ("other", b"kept")
    assert _parts(value.decode()) == (sent.trace_id, sent.span_id, 1)
    assert (extracted.trace_id, extracted.span_id) == (sent.trace_id, sent.span_id)
    assert extracted.is_remote


def test_tracestate_travels_with_traceparent() -> None:
    headers = [("traceparent", SAMPLED_PARENT.encode()), ("tracestate", b"vendor=abc")]
    with traced():
        context = tracing.extract_context(headers)
        assert context is not None
        with tracing.span("child", parent=context):
            carried = dict(tracing.inject_headers([]))
    assert carried["tracestate"] == b"vendor=abc"
    assert _parts(carried["traceparent"].decode())[0] == _parts(SAMPLED_PARENT)[0]


def test_grpc_metadata_with_text_values_is_extracted_too() -> None:
    with traced():
        context = tracing.extract_context([("traceparent", SAMPLED_PARENT), ("x-other", "1")])
        assert context is not None
        assert (
            trace.get_current_span(context).get_span_context().span_id == _parts(SAMPLED_PARENT)[1]
        )


def test_missing_or_malformed_headers_give_no_context() -> None:
    with traced():
        assert tracing.extract_context(None) is None
        assert tracing.extract_context([("other", b"x")]) is None
        assert tracing.extract_context([("traceparent", b"00-nope-nope-01")]) is None
        assert tracing.extract_context([("traceparent", b"\xff\xfe")]) is None
        assert tracing.context_from_trace("") is None


def test_off_by_default_there_are_no_spans_and_no_headers() -> None:
    assert CommonSettings().tracing_enabled is False
    assert tracing.configure_tracing(CommonSettings(), "test") is False
    assert not tracing.enabled()
    with tracing.span("call") as span:
        assert not span.is_recording()
        assert tracing.inject_headers([]) == []
        assert tracing.current_trace() is None
    assert tracing.extract_context([("traceparent", SAMPLED_PARENT.encode())]) is None
    assert tracing.record_spans("process touchpoints") is None
    assert tracing.begin_span("call", kind=tracing.SpanKind.SERVER) is None
    assert tracing.temporal_interceptors() == []


def test_off_a_published_touchpoint_gets_no_trace_and_its_record_no_headers() -> None:
    producer = FakeProducer()
    event = _touchpoint()
    asyncio.run(TouchpointPublisher(producer).publish([event]))
    assert producer.headers == [None]
    assert not event.HasField("trace")


def test_a_touchpoints_own_trace_is_mirrored_into_its_record_headers() -> None:
    producer = FakeProducer()
    event = _touchpoint()
    event.trace.traceparent = SAMPLED_PARENT
    event.trace.tracestate = "vendor=abc"
    asyncio.run(TouchpointPublisher(producer).publish([event]))
    assert producer.headers == [
        [("traceparent", SAMPLED_PARENT.encode()), ("tracestate", b"vendor=abc")]
    ]


def test_on_touchpoints_published_in_a_span_carry_it_in_payload_and_headers() -> None:
    producer = FakeProducer()
    events = [_touchpoint("c1"), _touchpoint("c2")]
    with traced() as exporter, tracing.span("IngestService/BatchTrack") as span:
        asyncio.run(TouchpointPublisher(producer).publish(events))
        context = span.get_span_context()
    expected = _parts(events[0].trace.traceparent)
    assert expected == (context.trace_id, context.span_id, 1)
    assert events[1].trace == events[0].trace
    assert producer.headers == [[("traceparent", events[0].trace.traceparent.encode())]] * 2
    assert [s.name for s in exporter.get_finished_spans()] == ["IngestService/BatchTrack"]


def test_on_an_event_with_its_own_trace_keeps_it_and_the_call_span_links_to_it() -> None:
    producer = FakeProducer()
    own = _touchpoint("c1")
    own.trace.traceparent = SAMPLED_PARENT
    plain = _touchpoint("c2")
    with traced() as exporter, tracing.span("IngestService/BatchTrack"):
        asyncio.run(TouchpointPublisher(producer).publish([own, plain]))
    assert own.trace.traceparent == SAMPLED_PARENT
    assert plain.trace.traceparent != SAMPLED_PARENT
    [call] = exporter.get_finished_spans()
    assert [link.context.trace_id for link in call.links] == [_parts(SAMPLED_PARENT)[0]]


def test_on_an_event_carrying_the_callers_own_context_continues_from_the_call_span() -> None:
    producer = FakeProducer()
    event = _touchpoint()
    event.trace.traceparent = SAMPLED_PARENT
    with traced() as exporter:
        context = tracing.extract_context([("traceparent", SAMPLED_PARENT.encode())])
        with tracing.span("IngestService/Track", parent=context) as span:
            asyncio.run(TouchpointPublisher(producer).publish([event]))
            span_id = span.get_span_context().span_id
    assert _parts(event.trace.traceparent)[:2] == (_parts(SAMPLED_PARENT)[0], span_id)
    [call] = exporter.get_finished_spans()
    assert not call.links


def test_a_consumed_record_gets_a_consumer_span_under_its_producer_and_passes_it_on() -> None:
    payload = touchpoint_pb2.TraceContext(traceparent=SAMPLED_PARENT)
    with traced() as exporter:
        spans = tracing.record_spans("process touchpoints")
        assert spans is not None
        with spans:
            span = spans.add(Record([("traceparent", SAMPLED_PARENT.encode())]), payload)
            assert span is not None
    [done] = exporter.get_finished_spans()
    assert done.kind == trace.SpanKind.CONSUMER
    assert done.parent is not None
    assert (done.context.trace_id, done.parent.span_id) == _parts(SAMPLED_PARENT)[:2]
    assert done.attributes is not None
    assert done.attributes["messaging.destination.name"] == "touchpoints"
    # The payload copy now names the consumer span: what the processor does next is its child.
    assert _parts(payload.traceparent)[:2] == (done.context.trace_id, done.context.span_id)


def test_a_record_without_headers_is_traced_from_its_payload_copy() -> None:
    payload = touchpoint_pb2.TraceContext(traceparent=SAMPLED_PARENT)
    with traced() as exporter:
        spans = tracing.record_spans("process touchpoints")
        assert spans is not None
        with spans:
            spans.add(Record([]), payload)
            spans.add(Record([]), touchpoint_pb2.TraceContext())  # nothing to continue
    [done] = exporter.get_finished_spans()
    assert done.parent is not None and done.parent.span_id == _parts(SAMPLED_PARENT)[1]


def test_a_failed_batch_ends_its_record_spans_as_errors() -> None:
    with traced() as exporter:
        spans = tracing.record_spans("process touchpoints")
        assert spans is not None
        try:
            with spans:
                spans.add(Record([("traceparent", SAMPLED_PARENT.encode())]))
                raise ConnectionError("redis away")
        except ConnectionError:
            pass
    [done] = exporter.get_finished_spans()
    assert done.status.status_code == trace.StatusCode.ERROR
    assert done.status.description == "ConnectionError"


def test_a_callers_choice_not_to_sample_is_followed_without_a_span() -> None:
    payload = touchpoint_pb2.TraceContext(traceparent=UNSAMPLED_PARENT)
    with traced() as exporter:
        spans = tracing.record_spans("process touchpoints")
        assert spans is not None
        with spans:
            assert spans.add(Record([("traceparent", UNSAMPLED_PARENT.encode())]), payload) is None
        context = tracing.extract_context([("traceparent", UNSAMPLED_PARENT.encode())])
        with tracing.span("child", parent=context) as child:
            assert not child.is_recording()
            # The unsampled context flows on, so later hops decide the same way.
            [(_, value)] = tracing.inject_headers([])
    assert _parts(value.decode())[2] == 0
    assert payload.traceparent == UNSAMPLED_PARENT
    assert exporter.get_finished_spans() == ()


def test_the_sample_ratio_applies_to_new_traces_and_a_sampled_caller_is_followed() -> None:
    with traced(sample_ratio=0.0) as exporter:
        with tracing.span("new trace") as root:
            assert not root.is_recording()
        with tracing.span(
            "continued", parent=tracing.extract_context([("traceparent", SAMPLED_PARENT)])
        ):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == ["continued"]
    with traced(sample_ratio=1.0) as exporter, tracing.span("new trace"):
        pass
    assert named(exporter.get_finished_spans(), "new trace")


def test_an_exception_marks_the_span_with_its_type_only() -> None:
    with traced() as exporter:
        try:
            with tracing.span("send line"):
                raise ValueError("U0123456789abcdef0123456789abcdef is not reachable")
        except ValueError:
            pass
    [done] = exporter.get_finished_spans()
    assert done.status.status_code == trace.StatusCode.ERROR
    assert done.status.description == "ValueError"
    assert not done.events  # no exception event with the message in it


def test_the_temporal_interceptor_is_offered_only_when_tracing_is_on() -> None:
    with traced():
        [interceptor] = tracing.temporal_interceptors()
    from temporalio.contrib.opentelemetry import TracingInterceptor

    assert isinstance(interceptor, TracingInterceptor)
    assert tracing.temporal_interceptors() == []


async def test_a_grpc_call_is_a_server_span_under_the_callers_traceparent() -> None:
    with traced() as exporter:
        echo = Echo()
        server = GrpcServer(settings(), "echo", echo.add)
        await server.start()
        channel = grpc_client.aio_channel(f"127.0.0.1:{server.port}", auth_support.ADMIN)
        try:
            await unary(channel, "Echo")(b"hi", metadata=(("traceparent", SAMPLED_PARENT),))
            with pytest.raises(grpc.aio.AioRpcError):
                await unary(channel, "Crash")(b"")
            await health_check(channel)(health_pb2.HealthCheckRequest())
        finally:
            await channel.close()
            await server.stop(0)
    spans = exporter.get_finished_spans()
    [echoed] = named(spans, f"{SERVICE}/Echo")
    assert echoed.kind == trace.SpanKind.SERVER
    assert echoed.parent is not None
    assert (echoed.context.trace_id, echoed.parent.span_id) == _parts(SAMPLED_PARENT)[:2]
    assert echoed.attributes is not None and echoed.attributes["rpc.grpc.status_code"] == 0
    # A server fault is an ERROR named by its code; the exception's text (personal data
    # here) stays out of the span.
    [crashed] = named(spans, f"{SERVICE}/Crash")
    assert crashed.parent is None
    assert crashed.status.status_code == trace.StatusCode.ERROR
    assert crashed.status.description == "INTERNAL"
    assert "hanako" not in str(crashed.attributes) and not crashed.events
    assert [s.name for s in spans] == [f"{SERVICE}/Echo", f"{SERVICE}/Crash"]  # no health span
