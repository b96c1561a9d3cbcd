"""Unsubscribe tokens: what we sign verifies; tampered, forged or malformed tokens do not."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enishi.channels.unsubscribe import MAX_TOKEN_CHARS, Unsubscribe, UnsubscribeTokens, link
from enishi.errors import ConfigurationError

SECRET = "unit-test-unsubscribe-secret-0123456789"
TOKENS = UnsubscribeTokens(SECRET)
REQUEST = Unsubscribe("cust-42", "email", "d_7f3a")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_signed_token_verifies_to_what_it_names() -> None:
    token = TOKENS.sign(REQUEST)
    assert TOKENS.verify(token) == REQUEST
    assert link("https://mail.example/", token) == f"https://mail.example/u/{token}"


def test_a_token_is_url_safe_and_carries_no_address() -> None:
    token = TOKENS.sign(Unsubscribe("顧客-1", "email", "d_1"))
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert TOKENS.verify(token) == Unsubscribe("顧客-1", "email", "d_1")


def test_another_secret_does_not_verify_it() -> None:
    other = UnsubscribeTokens("another-secret-of-enough-length-0123456789")
    assert other.verify(TOKENS.sign(REQUEST)) is None


def test_a_payload_swapped_for_another_customer_fails() -> None:
    token = TOKENS.sign(REQUEST)
    _, mac = token.split(".")
    forged = _b64(b"someone-else\x1femail\x1fd_7f3a") + "." + mac
    assert TOKENS.verify(forged) is None


def test_a_forged_mac_over_a_well_formed_payload_fails() -> None:
    payload = _b64(b"cust-42\x1femail\x1fd_1")
    assert TOKENS.verify(payload + "." + _b64(b"\0" * 32)) is None


@given(position=st.integers(min_value=0, max_value=200), char=st.sampled_from("AbZz09-_."))
def test_changing_any_character_of_a_token_fails(position: int, char: str) -> None:
    token = TOKENS.sign(REQUEST)
    index = position % len(token)
    tampered = token[:index] + char + token[index + 1 :]
    if tampered != token:
        assert TOKENS.verify(tampered) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "a.b.c",
        "a+b/c=.xyz",
        "YWJj.%%%",
        "A" * (MAX_TOKEN_CHARS + 1),
        "A" * 10 + "." + "B",
    ],
)
def test_malformed_tokens_fail_quietly(token: str) -> None:
    assert TOKENS.verify(token) is None


def test_a_signed_payload_with_an_unknown_channel_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only `sign` could make one; if a later version did, today's verifier must not accept it.
    monkeypatch.setattr("enishi.channels.unsubscribe.topics.CHANNELS", ("email", "fax"))
    token = TOKENS.sign(Unsubscribe("c1", "fax"))
    monkeypatch.undo()
    assert TOKENS.verify(token) is None


def test_signing_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match="channel"):
        TOKENS.sign(Unsubscribe("c1", "fax"))
    with pytest.raises(ValueError, match="customer_id"):
        TOKENS.sign(Unsubscribe("", "email"))
    with pytest.raises(ValueError, match="customer_id"):
        TOKENS.sign(Unsubscribe("c\x1f1", "email"))


@pytest.mark.parametrize("secret", ["", "short", "x" * 31])
def test_a_missing_or_short_secret_names_the_variable(secret: str) -> None:
    with pytest.raises(ConfigurationError, match="ENISHI_UNSUBSCRIBE_SECRET") as caught:
        UnsubscribeTokens(secret)
    assert caught.value.env_var == "ENISHI_UNSUBSCRIBE_SECRET"
