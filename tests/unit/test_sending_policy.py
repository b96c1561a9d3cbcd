"""Channel choice: consent per channel, reachability, the order channels are tried in."""

from __future__ import annotations

from enishi.sending import policy
from enishi.v1 import dispatch_pb2
from tests.sending_support import OPTED_IN, OPTED_OUT, channel_value, customer

ALL = ("email", "line", "sms", "push")
Reason = dispatch_pb2.SkipReason


def test_a_fixed_channel_is_tried_first_then_the_step_fallback_only() -> None:
    view = customer(preferred="sms", fallback=("push",))
    assert policy.candidate_channels("line", ("email",), view.preferences, ALL) == (
        "line",
        "email",
    )


def test_preferred_tries_the_customer_choice_then_step_fallback_then_customer_order() -> None:
    view = customer(preferred="sms", fallback=("push", "line"))
    order = policy.candidate_channels("preferred", ("email", "line"), view.preferences, ALL)
    assert order == ("sms", "email", "line", "push")


def test_preferred_without_any_preference_tries_the_template_channels() -> None:
    view = customer()
    assert policy.candidate_channels("preferred", (), view.preferences, ("line", "email")) == (
        "line",
        "email",
    )


def test_channels_the_template_lacks_are_never_tried() -> None:
    view = customer(preferred="sms")
    assert policy.candidate_channels("preferred", ("email",), view.preferences, ("line",)) == (
        "line",
    )


def test_email_without_a_consent_record_is_not_consented() -> None:
    outcome = policy.check(customer(email="a@example.jp"), "email")
    assert isinstance(outcome, policy.Rejection)
    assert outcome.reason == Reason.SKIP_REASON_NO_CONSENT


def test_a_line_friend_needs_no_consent_record_but_an_opt_out_wins() -> None:
    friend = customer(line_user_id="U" + "0" * 32)
    assert policy.check(friend, "line") == policy.Recipient("line", "U" + "0" * 32)
    opted_out = customer(line_user_id="U" + "0" * 32, consents={"line": OPTED_OUT})
    rejected = policy.check(opted_out, "line")
    assert isinstance(rejected, policy.Rejection)
    assert rejected.reason == Reason.SKIP_REASON_NO_CONSENT


def test_a_blocked_line_account_is_unreachable() -> None:
    view = customer(line_user_id="U" + "1" * 32, unreachable={"line": "line.unfollow"})
    rejected = policy.check(view, "line")
    assert isinstance(rejected, policy.Rejection)
    assert rejected.reason == Reason.SKIP_REASON_UNREACHABLE
    assert rejected.detail == "line.unfollow"


def test_a_hard_bounced_email_is_unreachable_even_with_consent() -> None:
    view = customer(
        email="a@example.jp", consents={"email": OPTED_IN}, unreachable={"email": "hard_bounce"}
    )
    rejected = policy.check(view, "email")
    assert isinstance(rejected, policy.Rejection)
    assert rejected.reason == Reason.SKIP_REASON_UNREACHABLE


def test_sms_needs_an_e164_number() -> None:
    bad = customer(phone="090-1234-5678", consents={"sms": OPTED_IN})
    assert isinstance(policy.check(bad, "sms"), policy.Rejection)
    good = customer(phone="+819012345678", consents={"sms": OPTED_IN})
    assert policy.check(good, "sms") == policy.Recipient("sms", "+819012345678")


def test_push_uses_the_newest_token_with_its_platform() -> None:
    view = customer(push_token="tok-1", consents={"push": OPTED_IN})
    recipient = policy.check(view, "push")
    assert isinstance(recipient, policy.Recipient)
    assert (recipient.address, recipient.push_platform) == ("tok-1", 1)


def test_the_first_eligible_channel_wins_and_the_others_say_why() -> None:
    view = customer(
        email="a@example.jp",
        line_user_id="U" + "2" * 32,
        consents={"email": OPTED_IN},
        unreachable={"line": "line.unfollow"},
        preferred="line",
    )
    choice = policy.choose(view, "preferred", ("email",), ALL)
    assert [r.channel for r in choice.eligible] == ["email"]
    assert choice.rejection("line") is not None


def test_nothing_eligible_is_unreachable_when_some_channel_had_consent() -> None:
    view = customer(consents={"email": OPTED_IN})  # consent, but no address
    skip = policy.choose(view, "email", (), ALL).skip()
    assert skip.reason == Reason.SKIP_REASON_UNREACHABLE
    assert "email: no email address" in skip.detail


def test_nothing_eligible_without_any_consent_is_no_consent() -> None:
    view = customer(email="a@example.jp", phone="+819012345678")
    skip = policy.choose(view, "email", ("sms",), ALL).skip()
    assert skip.reason == Reason.SKIP_REASON_NO_CONSENT
    assert skip.channel == "email"


def test_channel_values_match_the_proto() -> None:
    assert channel_value("push") == 4
