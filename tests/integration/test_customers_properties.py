"""Whatever a client sends, CustomerService answers OK, NOT_FOUND or INVALID_ARGUMENT naming
the field; never INTERNAL. Hypothesis builds random and boundary requests for every method
and sends them to a real in-process server on the real broker and Valkey."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from uuid import uuid4

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enishi import keys
from enishi.v1 import channel_pb2, consent_pb2, identity_pb2, touchpoint_pb2
from enishi.v1 import customer_service_pb2 as pb
from enishi.v1 import customer_service_pb2_grpc as pb_grpc
from tests.conftest import LocalServers
from tests.integration.test_customers import running_customers

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
FIELD = re.compile(
    r"^(customer(\.\w+)?|timeline_limit|page_size|page_token|names(\[\d+\])?|kinds(\[\d+\])?"
    r"|(before|since)(\.\w+)?|consents(\[\d+\]\.\w+)?|preferences(\.\w+)*(\[\d+\])?|update_mask\S*"
    r"|source|request_id|request): "
)
EXPECTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
KNOWN_EMAIL = f"known-{uuid4().hex[:8]}@example.com"
KNOWN_ID = f"cust-{uuid4().hex[:8]}"

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "x" * 200, "\x00", "a\u200bb", "ünï", "Asia/Tokyo", "21:00"]),
)
refs = st.one_of(
    st.just(identity_pb2.CustomerRef()),
    st.just(identity_pb2.CustomerRef(email=KNOWN_EMAIL)),
    st.just(identity_pb2.CustomerRef(customer_id=KNOWN_ID)),
    st.builds(lambda v: identity_pb2.CustomerRef(customer_id=v), texts),
    st.builds(lambda v: identity_pb2.CustomerRef(email=v), st.one_of(texts, st.emails())),
    st.builds(lambda v: identity_pb2.CustomerRef(phone=v), texts),
    st.builds(lambda v: identity_pb2.CustomerRef(line_user_id=v), texts),
    st.builds(lambda v: identity_pb2.CustomerRef(push_token=v), texts),
)
ints = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 0, 1, 500, 501]))
enums = st.one_of(st.integers(-3, 12), st.sampled_from([0, 1, 2, 3, 4]))
seconds = st.one_of(st.integers(-(2**40), 2**40), st.integers(1_600_000_000, 1_900_000_000))
nanos = st.one_of(st.integers(0, 999_999_999), st.sampled_from([-1, 1_000_000_000]))
paths = st.one_of(
    st.sampled_from(
        ["preferred_channel", "fallback_channels", "locale", "time_zone", "quiet_hours"]
    ),
    texts,
)


@st.composite
def timeline_requests(draw: st.DrawFn) -> pb.ListTimelineRequest:
    request = pb.ListTimelineRequest(
        customer=draw(refs),
        page_size=draw(ints),
        page_token=draw(st.one_of(st.just(""), texts)),
        names=draw(st.lists(texts, max_size=3)),
        kinds=[
            touchpoint_pb2.TouchpointKind.ValueType(k) for k in draw(st.lists(enums, max_size=3))
        ],
    )
    for bound in ("before", "since"):
        if draw(st.booleans()):
            stamp = getattr(request, bound)
            stamp.seconds, stamp.nanos = draw(seconds), draw(nanos)
    return request


@st.composite
def preference_requests(draw: st.DrawFn) -> pb.UpdatePreferencesRequest:
    request = pb.UpdatePreferencesRequest(
        customer=draw(refs),
        source=draw(texts),
        request_id=draw(st.one_of(st.just(""), texts)),
    )
    for _ in range(draw(st.integers(0, 3))):
        consent = request.consents.add(
            channel=channel_pb2.Channel.ValueType(draw(enums)),
            status=consent_pb2.ConsentStatus.ValueType(draw(enums)),
            source=draw(texts),
        )
        if draw(st.booleans()):
            consent.updated_at.seconds, consent.updated_at.nanos = draw(seconds), draw(nanos)
    if draw(st.booleans()):
        prefs = request.preferences
        prefs.preferred_channel = channel_pb2.Channel.ValueType(draw(enums))
        prefs.fallback_channels.extend(
            channel_pb2.Channel.ValueType(c) for c in draw(st.lists(enums, max_size=3))
        )
        prefs.locale = draw(st.one_of(texts, st.sampled_from(["ja-JP", "en"])))
        prefs.time_zone = draw(st.one_of(texts, st.sampled_from(["Asia/Tokyo", "UTC"])))
        prefs.quiet_hours.start = draw(texts)
        prefs.quiet_hours.end = draw(texts)
    request.update_mask.paths.extend(draw(st.lists(paths, max_size=3)))
    return request


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub(servers: LocalServers) -> AsyncIterator[pb_grpc.CustomerServiceAsyncStub]:
    redis = aioredis.Redis.from_url(servers.redis_url)
    await redis.set(keys.identity("email", KNOWN_EMAIL), KNOWN_ID)
    await redis.sadd(keys.identities(KNOWN_ID), f"email:{KNOWN_EMAIL}")
    await redis.aclose()
    async with running_customers(servers) as (channel, _):
        yield pb_grpc.CustomerServiceStub(channel)


async def _answers_ok_or_a_named_field(call: Awaitable[object]) -> None:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in EXPECTED, (exc.code(), exc.details())
        assert FIELD.match(exc.details() or ""), exc.details()


@EXAMPLES
@given(ref=refs, limit=ints)
async def test_get_and_find_answer_ok_or_a_field_error(
    stub: pb_grpc.CustomerServiceAsyncStub, ref: identity_pb2.CustomerRef, limit: int
) -> None:
    await _answers_ok_or_a_named_field(
        stub.GetCustomer(pb.GetCustomerRequest(customer=ref, timeline_limit=limit), timeout=30)
    )
    await _answers_ok_or_a_named_field(
        stub.FindCustomer(pb.FindCustomerRequest(customer=ref), timeout=30)
    )


@EXAMPLES
@given(request=timeline_requests())
async def test_list_timeline_answers_ok_or_a_field_error(
    stub: pb_grpc.CustomerServiceAsyncStub, request: pb.ListTimelineRequest
) -> None:
    await _answers_ok_or_a_named_field(stub.ListTimeline(request, timeout=30))


@EXAMPLES
@given(request=preference_requests())
async def test_update_preferences_answers_ok_or_a_field_error(
    stub: pb_grpc.CustomerServiceAsyncStub, request: pb.UpdatePreferencesRequest
) -> None:
    await _answers_ok_or_a_named_field(stub.UpdatePreferences(request, timeout=30))
