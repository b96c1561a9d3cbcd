"""Provider adapters' request shapes: MIME email, LINE retry keys, FCM bodies, SMTP codes."""

from __future__ import annotations

import uuid

import aiosmtplib
import pytest

from enishi.channels.email import build_message, outcome_of
from enishi.channels.line import push_body, retry_key
from enishi.channels.push import message_body
from enishi.v1 import channel_pb2, dispatch_pb2
from services.sandbox.faults import Fault, Faults


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


def test_an_email_without_html_or_unsubscribe_gets_text_only_and_the_default_header() -> None:
    message = build_message(
        _email(), default_from="x@y.jp", default_list_unsubscribe="<mailto:u@y.jp?s={dispatch_id}>"
    )
    assert message.get_content_type() == "text/plain"
    assert message["List-Unsubscribe"] == "<mailto:u@y.jp?s=d_abc>"
    assert message["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize(
    ("code", "kind"), [(451, "transient"), (421, "transient"), (550, "permanent")]
)
def test_smtp_reply_codes_map_to_outcomes(code: int, kind: str) -> None:
    outcome = outcome_of(aiosmtplib.SMTPResponseException(code, "a@b.jp: no"))
    assert (outcome.kind, outcome.error_code) == (kind, f"smtp_{code}")
    assert "a@b.jp" not in outcome.error_message


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
