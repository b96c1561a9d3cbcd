"""Provider adapters' request shapes: MIME email, LINE retry keys, FCM bodies, SMTP codes."""

from __future__ import annotations

import uuid

import aiosmtplib
import pytest

from enishi.channels.email import build_message, list_unsubscribe, outcome_of
from enishi.channels.http import HttpReply
from enishi.channels.line import push_body, retry_key
from enishi.channels.push import message_body
from enishi.channels.push import outcome_of as push_outcome
from enishi.channels.sms import outcome_of as sms_outcome
from enishi.channels.unsubscribe import Unsubscribe, UnsubscribeTokens
from enishi.v1 import channel_pb2, dispatch_pb2
from services.sandbox.faults import Fault, Faults

SECRET = "unit-test-unsubscribe-secret-0123456789"


def _email(**content: object) -> dispatch_pb2.DispatchEvent:
    event = dispatch_pb2.DispatchEvent(
        dispatch_id="d_abc", channel=channel_pb2.CHANNEL_EMAIL, customer_id="c1", address="a@b.jp"
    )
    event.email.subject = "件名"
    event.email.text = "text body"
    for name, value in content.items():
        setattr(event.email, name, value)
    return event


def test_an_email_is_multipart_alternative_with_text_html_and_unsubscribe() -> None:
    event = _email(
        html="<p>hi</p>", list_unsubscribe="<https://u>", list_unsubscribe_one_click=True
    )
    message = build_message(event, default_from="Shop <news@shop.example>")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Message-ID"] == "<d_abc@shop.example>"
    assert message["List-Unsubscribe"] == "<https://u>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == "件名"


def test_an_email_without_its_own_unsubscribe_gets_our_one_click_link() -> None:
    tokens = UnsubscribeTokens(SECRET)
    event = _email()
    ours = list_unsubscribe(event, tokens, base_url="https://mail.shop.example/")
    message = build_message(event, default_from="x@y.jp", list_unsubscribe=ours)
    assert message.get_content_type() == "text/plain"
    header = str(message["List-Unsubscribe"])
    assert header.startswith("<https://mail.shop.example/u/") and header.endswith(">")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = header.removeprefix("<https://mail.shop.example/u/").removesuffix(">")
    assert tokens.verify(token) == Unsubscribe("c1", "email", "d_abc")
    assert "a@b.jp" not in header


def test_a_configured_mailto_follows_the_one_click_link_with_the_same_token() -> None:
    value = list_unsubscribe(
        _email(), UnsubscribeTokens(SECRET), base_url="https://u.example", mailto="u@shop.example"
    )
    link, mailto = value.split(", ")
    token = link.removeprefix("<https://u.example/u/").removesuffix(">")
    assert mailto == f"<mailto:u@shop.example?subject=unsubscribe%20{token}>"


@pytest.mark.parametrize(
    ("code", "kind"), [(451, "transient"), (421, "transient"), (550, "permanent")]
)
def test_smtp_reply_codes_map_to_outcomes(code: int, kind: str) -> None:
    outcome = outcome_of(aiosmtplib.SMTPResponseException(code, "a@b.jp: no"))
    assert (outcome.kind, outcome.error_code) == (kind, f"smtp_{code}")
    assert "a@b.jp" not in outcome.error_message


def _refused(code: int, text: str) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, text, "a@b.jp")])


@pytest.mark.parametrize(
    ("code", "text", "error_code"),
    [
        (550, "5.1.1 <a@b.jp>: mailbox unavailable", "bounced"),
        (550, "mailbox unavailable", "bounced"),
        (553, "mailbox name not allowed", "bounced"),
        (550, "5.1.2 bad destination system", "bounced"),
        (550, "5.2.1 mailbox disabled", "bounced"),
        (550, "5.7.1 rejected by policy (our IP is listed)", "smtp_550"),
        (552, "5.2.2 mailbox full", "smtp_552"),
        (554, "transaction failed", "smtp_554"),
        (553, "5.1.8 bad sender domain", "smtp_553"),
    ],
)
def test_a_recipient_refused_at_rcpt_to_bounces_only_when_the_mailbox_is_dead(
    code: int, text: str, error_code: str
) -> None:
    outcome = outcome_of(_refused(code, text))
    assert (outcome.kind, outcome.error_code) == ("permanent", error_code)
    assert "a@b.jp" not in outcome.error_message


def test_a_temporary_refusal_at_rcpt_to_is_retried_and_a_5xx_at_data_is_no_bounce() -> None:
    assert outcome_of(_refused(450, "4.2.1 try later")).kind == "transient"
    at_data = outcome_of(aiosmtplib.SMTPDataError(550, "5.1.1 no such user"))
    assert (at_data.kind, at_data.error_code) == ("permanent", "smtp_550")


def _fcm(status: int, code: str, *details: dict[str, object]) -> HttpReply:
    error: dict[str, object] = {"code": status, "message": "x", "status": code}
    if details:
        error["details"] = list(details)
    return HttpReply(status, body={"error": error})


FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.mark.parametrize(
    ("reply", "error_code"),
    [
        (_fcm(404, "NOT_FOUND", {"@type": FCM_ERROR, "errorCode": "UNREGISTERED"}), "unregistered"),
        (
            _fcm(400, "INVALID_ARGUMENT", {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}),
            "invalid_token",
        ),
        (
            _fcm(
                400,
                "INVALID_ARGUMENT",
                {"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.token"}]},
            ),
            "invalid_token",
        ),
        (
            _fcm(
                400,
                "INVALID_ARGUMENT",
                {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                {"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.data[0].value"}]},
            ),
            "http_400",
        ),
        (_fcm(404, "NOT_FOUND"), "http_404"),
        (_fcm(400, "INVALID_ARGUMENT", "not a dict"), "http_400"),  # type: ignore[arg-type]
    ],
)
def test_fcm_errors_about_the_token_say_the_address_is_dead(
    reply: HttpReply, error_code: str
) -> None:
    outcome = push_outcome(reply)
    assert (outcome.kind, outcome.error_code) == ("permanent", error_code)


def test_fcm_unavailable_is_still_transient() -> None:
    outcome = push_outcome(
        _fcm(503, "UNAVAILABLE", {"@type": FCM_ERROR, "errorCode": "UNAVAILABLE"})
    )
    assert outcome.kind == "transient"


def test_an_sms_invalid_number_is_a_dead_address_without_the_providers_text() -> None:
    reply = HttpReply(400, body={"code": "invalid_number", "message": "+8190123 is not valid"})
    outcome = sms_outcome(reply)
    assert (outcome.kind, outcome.error_code) == ("permanent", "invalid_number")
    assert "+8190123" not in outcome.error_message
    other = sms_outcome(HttpReply(400, body={"code": "body_too_long", "message": "too long"}))
    assert other.error_code == "http_400"
    assert sms_outcome(HttpReply(503, body={"code": "invalid_number"})).kind == "transient"


def test_the_line_retry_key_is_a_uuid_derived_from_the_dispatch_id() -> None:
    assert retry_key("d_1") == retry_key("d_1") != retry_key("d_2")
    assert uuid.UUID(retry_key("d_1")).version == 5


def test_a_line_push_body_carries_the_messages_as_json() -> None:
    event = dispatch_pb2.DispatchEvent(dispatch_id="d", address="U" + "0" * 32)
    event.line.messages.add().update({"type": "text", "text": "こんにちは"})
    assert push_body(event) == {
        "to": "U" + "0" * 32,
        "messages": [{"type": "text", "text": "こんにちは"}],
        "notificationDisabled": False,
    }


def test_an_fcm_body_carries_the_dispatch_id_and_collapse_keys() -> None:
    event = dispatch_pb2.DispatchEvent(dispatch_id="d_9", address="tok")
    event.push.title, event.push.body = "t", "b"
    message = message_body(event)["message"]
    assert message["token"] == "tok"
    assert message["data"]["enishi_dispatch_id"] == "d_9"
    assert message["android"]["collapse_key"] == message["apns"]["headers"]["apns-collapse-id"]


def test_sandbox_faults_hit_their_provider_and_recipient_a_limited_number_of_times() -> None:
    faults = Faults()
    faults.add(Fault.parse({"provider": "line", "status": 503, "times": 2, "to": "U1"}))
    assert faults.hit("line", "U2") == []
    assert faults.hit("sms", "U1") == []
    assert len(faults.hit("line", "U1")) == 1
    assert len(faults.hit("line", "U1")) == 1
    assert faults.hit("line", "U1") == []
    with pytest.raises(ValueError, match="provider"):
        Fault.parse({"provider": "pigeon"})
    with pytest.raises(ValueError, match="rate"):
        Fault.parse({"provider": "line", "rate": 2})


def test_an_unreachable_fault_is_only_seen_by_requests_that_ask_for_it() -> None:
    faults = Faults()
    faults.add(Fault.parse({"provider": "smtp", "kind": "unreachable", "to": "a@b.jp", "times": 0}))
    assert faults.hit("smtp", "a@b.jp", kinds=("status", "timeout", "delay", "lost_reply")) == []
    for _ in range(3):  # times 0: the address stays dead
        assert [f.kind for f in faults.hit("smtp", "a@b.jp", kinds=("unreachable",))] == [
            "unreachable"
        ]
    with pytest.raises(ValueError, match="unfollow"):
        Fault.parse({"provider": "line", "kind": "unreachable"})
