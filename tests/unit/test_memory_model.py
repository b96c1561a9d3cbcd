"""Pure parts of customer memory: LWW versions, time conversions, channel names, weights."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enishi.memory import model
from enishi.v1 import channel_pb2, touchpoint_pb2

_MS = st.integers(min_value=0, max_value=10**14)
_IDS = st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=1, max_size=26)


@given(_MS, _IDS, _MS, _IDS)
def test_versions_order_by_occurred_at_then_event_id(
    ms_a: int, id_a: str, ms_b: int, id_b: str
) -> None:
    # Same-length ids (ULIDs) compare like the (time, id) pair; that is what LWW relies on.
    id_b = id_b[: len(id_a)].ljust(len(id_a), "0")
    id_a = id_a.ljust(len(id_b), "0")
    assert (model.version(ms_a, id_a) < model.version(ms_b, id_b)) == ((ms_a, id_a) < (ms_b, id_b))


def test_a_later_write_wins_even_with_a_smaller_event_id() -> None:
    assert model.version(2_000, "A") > model.version(1_000, "Z")


@given(_MS)
def test_version_remembers_its_time(ms: int) -> None:
    assert model.version_ms(model.version(ms, "01J")) == ms


@given(_MS)
def test_milliseconds_survive_a_timestamp_round_trip(ms: int) -> None:
    assert model.to_ms(model.from_ms(ms)) == ms


def test_channel_names_are_the_topic_suffixes() -> None:
    assert model.channel_name(channel_pb2.CHANNEL_EMAIL) == "email"
    assert model.channel_value("line") == channel_pb2.CHANNEL_LINE


def test_what_we_send_does_not_count_as_engagement() -> None:
    kind = touchpoint_pb2.TouchpointKind
    assert model.density_weight(kind.TOUCHPOINT_KIND_MESSAGE, "message.sent") == 0
    assert model.density_weight(kind.TOUCHPOINT_KIND_RECEIPT, "message.replied") == 3
    assert model.density_weight(kind.TOUCHPOINT_KIND_EVENT, "order.completed") == 3
    assert model.density_weight(kind.TOUCHPOINT_KIND_EVENT, "page.viewed") == 1
