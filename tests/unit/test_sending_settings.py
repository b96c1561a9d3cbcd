"""The sending policy's settings: caps from ENISHI_ variables, names checked at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from enishi.config import SendingPolicySettings


def test_per_channel_overrides_replace_the_channel_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENISHI_SENDING_CAP_CHANNEL_DAY_OVERRIDES", '{"sms": 1}')
    monkeypatch.setenv("ENISHI_SENDING_CAP_CHANNEL_DAY", "4")
    settings = SendingPolicySettings()
    assert (settings.channel_day_cap("sms"), settings.channel_day_cap("line")) == (1, 4)


def test_an_unknown_channel_in_the_overrides_is_named() -> None:
    with pytest.raises(ValidationError, match="unknown channel 'fax'"):
        SendingPolicySettings(sending_cap_channel_day_overrides={"fax": 1})


def test_an_unknown_fallback_time_zone_is_named() -> None:
    with pytest.raises(ValidationError, match="sending_fallback_time_zone"):
        SendingPolicySettings(sending_fallback_time_zone="Mars/Base")
