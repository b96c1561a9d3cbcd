"""Identity values are normalised once, the same way everywhere, and bad ones say why."""

from __future__ import annotations

import pytest

from enishi import identity
from enishi.identity import InvalidIdentity, normalize


@pytest.mark.parametrize(
    ("kind", "given", "stored"),
    [
        ("email", " Ann.Lee+shop@Example.CO.JP ", "ann.lee+shop@example.co.jp"),
        ("email", "a@xn--r8jz45g.jp", "a@xn--r8jz45g.jp"),
        ("phone", "+81 90-1234-5678", "+819012345678"),
        ("phone", "+1 (415) 555.0100", "+14155550100"),
        ("line_user_id", "U" + "0123456789abcdef" * 2, "U" + "0123456789abcdef" * 2),
        ("anonymous_id", "device 42", "device 42"),
        ("customer_id", "顧客-001", "顧客-001"),
        ("push_token", "fcm:APA91b-x_y", "fcm:APA91b-x_y"),
    ],
)
def test_valid_identities_are_normalised(kind: str, given: str, stored: str) -> None:
    assert normalize(kind, given) == stored


@pytest.mark.parametrize(
    ("kind", "given"),
    [
        ("email", "no-at-sign.example.com"),
        ("email", "two@@example.com"),
        ("email", "dots..in@example.com"),
        ("email", "a@localhost"),
        ("email", "a@-bad-.com"),
        ("email", "a@example.c"),
        ("email", "ünï@example.com"),
        ("email", "x" * 65 + "@example.com"),
        ("phone", "09012345678"),
        ("phone", "+0123456789"),
        ("phone", "+1234567"),
        ("phone", "+1234567890123456"),
        ("phone", "+81 90 abcd 5678"),
        ("line_user_id", "U" + "0123456789ABCDEF" * 2),
        ("line_user_id", "u" + "0" * 32),
        ("anonymous_id", ""),
        ("anonymous_id", "x" * 129),
        ("anonymous_id", "tab\there"),
        ("anonymous_id", "zero\u200bwidth"),
        ("customer_id", " padded"),
        ("push_token", "has space"),
        ("push_token", "t" * 4097),
    ],
)
def test_invalid_identities_are_rejected_without_repeating_the_value(kind: str, given: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        normalize(kind, given)
    if len(given) > 3:
        assert given not in str(caught.value)


def test_minted_ids_are_c_and_a_ulid_and_nothing_else_looks_minted() -> None:
    minted = identity.new_customer_id()
    assert identity.is_minted(minted) and len(minted) == 28
    assert not identity.is_minted("c_" + "I" * 26)  # I is not in the ULID alphabet
    assert not identity.is_minted("cust-42")
    assert identity.new_customer_id() != minted


def test_a_ref_names_its_entry_in_the_customer_identity_set() -> None:
    assert identity.Ref("email", "a@b.co").member == "email:a@b.co"
