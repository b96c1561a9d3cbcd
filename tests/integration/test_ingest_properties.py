"""Whatever a client sends, ingest answers OK or a client error naming the field; never INTERNAL.

Hypothesis builds random and boundary requests (huge and control-character strings, deep
props, NaN, timestamps at and past the limits, empty refs) and sends them to a real
in-process server on the real broker and Valkey.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb
from enishi.v1 import ingest_service_pb2_grpc as pb_grpc
from services.ingest.validation import EVENT_NAME, OLDEST_OCCURRED_AT
from tests.conftest import LocalServers
from tests.integration.test_ingest import running_ingest

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Modest counts: CI has two cores and every valid example really goes to Redis and Kafka.
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
FIELD = re.compile(
    r"^(events(\[\d+\])?|event|identity|traits|event_id|occurred_at|source|request)\b"
)
CLIENT_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}

NOW = int(time.time())
MIN_TS, MAX_TS = -62_135_596_800, 253_402_300_799  # the Timestamp range, 0001..9999

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), max_size=20),
    st.sampled_from(
        ["", " ", "x" * 129, "x" * 5000, "\x00", "a\u200bb", "ünï", "+81 90-1234-5678"]
    ),
)
emails = st.one_of(texts, st.emails().map(str.upper), st.just("ann@example.com"))
phones = st.one_of(texts, st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
line_ids = st.one_of(texts, st.from_regex(r"U[0-9a-f]{32}", fullmatch=True))
names = st.one_of(
    texts,
    st.from_regex(EVENT_NAME, fullmatch=True),
    st.sampled_from(["order.completed", "message.sent", "a." + "b" * 200, "Order Completed"]),
)
seconds = st.one_of(
    st.integers(MIN_TS - 10, MAX_TS + 10),
    st.sampled_from(
        [OLDEST_OCCURRED_AT - 1, OLDEST_OCCURRED_AT, NOW, NOW + 86_000, NOW + 86_500, 2**62]
    ),
)
timestamps = st.builds(
    lambda s, n: {"seconds": s, "nanos": n},
    seconds,
    st.one_of(st.integers(0, 999_999_999), st.sampled_from([-1, 1_000_000_000])),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=12,
)


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


props = st.one_of(
    st.dictionaries(st.text(max_size=12), json_values, max_size=4),
    st.integers(1, 25).map(_deep),  # deeper than ~30 protobuf itself refuses to build
    st.just({"blob": "x" * 40_000}),
)
ids = st.from_regex(r"[a-z0-9-]{1,24}", fullmatch=True)
good_emails = st.emails().filter(lambda e: len(e) < 200 and e.isascii())
good_phones = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)
good_lines = st.from_regex(r"U[0-9a-f]{32}", fullmatch=True)
good_props = st.dictionaries(
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda children: st.lists(children, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)
good_refs = st.one_of(
    st.builds(lambda v: identity_pb2.CustomerRef(customer_id=v), ids),
    st.builds(lambda v: identity_pb2.CustomerRef(anonymous_id=v), ids),
    st.builds(lambda v: identity_pb2.CustomerRef(email=v), good_emails),
    st.builds(lambda v: identity_pb2.CustomerRef(phone=v), good_phones),
    st.builds(lambda v: identity_pb2.CustomerRef(line_user_id=v), good_lines),
)
refs = st.one_of(
    st.just(identity_pb2.CustomerRef()),
    st.builds(lambda v: identity_pb2.CustomerRef(customer_id=v), texts),
    st.builds(lambda v: identity_pb2.CustomerRef(anonymous_id=v), texts),
    st.builds(lambda v: identity_pb2.CustomerRef(email=v), emails),
    st.builds(lambda v: identity_pb2.CustomerRef(phone=v), phones),
    st.builds(lambda v: identity_pb2.CustomerRef(line_user_id=v), line_ids),
    st.builds(lambda v: identity_pb2.CustomerRef(push_token=v), texts),
)


@st.composite
def touchpoints(draw: st.DrawFn) -> touchpoint_pb2.Touchpoint:
    # Half the examples are tidy (only ref, props and time random) so valid events, which
    # exercise resolution and Kafka, are common too.
    tidy = draw(st.booleans())
    kinds = st.just(1) if tidy else st.sampled_from([0, 1, 2, 8, 99, -1])
    event = touchpoint_pb2.Touchpoint(
        customer=draw(st.one_of(good_refs, refs) if tidy else refs),
        name=draw(st.from_regex(EVENT_NAME, fullmatch=True) if tidy else names),
        event_id="" if tidy else draw(st.one_of(st.just(""), texts)),
        kind=touchpoint_pb2.TouchpointKind.ValueType(draw(kinds)),
        source="test" if tidy else draw(texts),
        channel="web" if tidy else draw(texts),
        attributes={} if tidy else draw(st.dictionaries(texts, texts, max_size=3)),
    )
    if tidy:
        event.occurred_at.seconds = draw(st.integers(NOW - 10**8, NOW + 3600))
    elif draw(st.booleans()):
        ts = draw(timestamps)
        event.occurred_at.seconds, event.occurred_at.nanos = ts["seconds"], ts["nanos"]
    if draw(st.booleans()):
        event.props.update(draw(st.one_of(good_props, props) if tidy else props))
    if not tidy and draw(st.booleans()):
        event.trace.traceparent = draw(texts)
    return event


@st.composite
def identifies(draw: st.DrawFn) -> pb.IdentifyRequest:
    tidy = draw(st.booleans())

    def maybe(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> str:
        return draw(st.one_of(st.just(""), good if tidy else st.one_of(good, bad)))

    identity = identity_pb2.Identity(
        customer_id=maybe(ids, texts),
        anonymous_id=maybe(ids, texts),
        email=maybe(good_emails, emails),
        phone=maybe(good_phones, phones),
        line_user_id=maybe(good_lines, line_ids),
    )
    for _ in range(draw(st.integers(0, 2 if tidy else 3))):
        identity.push_tokens.add(
            token=draw(ids if tidy else texts), platform=draw(st.integers(0 if tidy else -1, 5))
        )
    request = pb.IdentifyRequest(
        identity=identity,
        event_id="" if tidy else draw(st.one_of(st.just(""), texts)),
        source="test" if tidy else draw(texts),
    )
    if draw(st.booleans()):
        request.traits.update(draw(good_props if tidy else props))
    if not tidy and draw(st.booleans()):
        ts = draw(timestamps)
        request.occurred_at.seconds, request.occurred_at.nanos = ts["seconds"], ts["nanos"]
    return request


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def channel(servers: LocalServers) -> AsyncIterator[grpc.aio.Channel]:
    async with running_ingest(servers, batch_max=5) as (channel, _):
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.aio.Channel) -> pb_grpc.IngestServiceAsyncStub:
    return pb_grpc.IngestServiceStub(channel)


def _assert_client_error(exc: grpc.aio.AioRpcError) -> None:
    assert exc.code() in CLIENT_CODES, (exc.code(), exc.details())
    assert FIELD.match(exc.details() or ""), exc.details()


@EXAMPLES
@given(event=touchpoints())
async def test_track_answers_ok_or_a_field_error(
    stub: pb_grpc.IngestServiceAsyncStub, event: touchpoint_pb2.Touchpoint
) -> None:
    try:
        reply = await stub.Track(pb.TrackRequest(event=event), timeout=30)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
        assert (exc.details() or "").startswith("event."), exc.details()
    else:
        assert reply.customer_id and reply.event_id


@EXAMPLES
@given(events=st.lists(touchpoints(), min_size=1, max_size=5))
async def test_batch_track_reports_every_bad_item_by_its_index(
    stub: pb_grpc.IngestServiceAsyncStub, events: list[touchpoint_pb2.Touchpoint]
) -> None:
    reply = await stub.BatchTrack(pb.BatchTrackRequest(events=events), timeout=30)
    assert [r.index for r in reply.results] == list(range(len(events)))
    for result in reply.results:
        if result.accepted:
            assert result.customer_id and not result.errors
        else:
            assert result.errors
            assert all(e.field.startswith(f"events[{result.index}]") for e in result.errors)


@EXAMPLES
@given(request=identifies())
async def test_identify_answers_ok_or_a_field_error(
    stub: pb_grpc.IngestServiceAsyncStub, request: pb.IdentifyRequest
) -> None:
    try:
        reply = await stub.Identify(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        _assert_client_error(exc)
    else:
        assert reply.customer_id and reply.event_id


@EXAMPLES
@given(data=st.binary(max_size=200), method=st.sampled_from(["Track", "BatchTrack", "Identify"]))
async def test_arbitrary_bytes_never_answer_internal(
    channel: grpc.aio.Channel, data: bytes, method: str
) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/enishi.v1.IngestService/{method}"
    )
    try:
        await call(data, timeout=30)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in CLIENT_CODES, (exc.code(), exc.details())
        assert FIELD.match(exc.details() or ""), exc.details()
