"""API keys and roles: parsing, loading, constant-time lookup, the one table of method roles."""

from __future__ import annotations

import importlib
import pkgutil
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from enishi import auth, grpc_client, v1
from enishi.auth import (
    METHOD_ROLES,
    ApiKey,
    ApiKeysError,
    Guard,
    KeyRing,
    Role,
    guard_from_settings,
    parse_keys,
    presented_secret,
    required_role,
)
from enishi.config import GrpcClientSettings, GrpcServiceSettings
from enishi.devstack import api_keys
from enishi.errors import ConfigurationError, PermissionDenied, Unauthenticated

pytestmark = pytest.mark.unit

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
SECRET = "s" * 24


def proto_methods() -> set[str]:
    """`/package.Service/Method` of every method of every service in the generated protos."""
    found = set()
    for module in pkgutil.iter_modules(v1.__path__):
        if not module.name.endswith("_pb2"):
            continue
        descriptor = importlib.import_module(f"enishi.v1.{module.name}").DESCRIPTOR
        for service in descriptor.services_by_name.values():
            found |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return found


def test_every_rpc_in_the_protos_has_a_role_so_none_is_left_unprotected_by_accident() -> None:
    methods = proto_methods()
    assert len(methods) >= 18  # ingest 3, customers 4, registry 11: the protos were found
    assert methods - METHOD_ROLES.keys() == set()


def test_the_role_table_names_no_method_the_protos_lack() -> None:
    assert METHOD_ROLES.keys() - proto_methods() == set()


def test_security_doc_lists_every_method_with_its_role() -> None:
    rows = {
        f"| `{method.lstrip('/').removeprefix('enishi.v1.')}` | {role.value} |"
        for method, role in METHOD_ROLES.items()
    }
    text = SECURITY_DOC.read_text()
    documented = set(re.findall(r"^\| `\w+/\w+` \| \w+ \|$", text, flags=re.MULTILINE))
    assert documented == rows, "docs/security.md's roles table is out of date:\n" + "\n".join(
        sorted(rows)
    )


def test_health_and_reflection_are_open_and_unknown_methods_need_admin() -> None:
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None
    assert required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") is None
    assert required_role("/enishi.v1.IngestService/Track") is Role.INGEST
    assert required_role("/enishi.v2.Future/Method") is Role.ADMIN


def test_entries_parse_from_commas_lines_and_comments() -> None:
    text = f"""
    # producers
    shop:ingest:{SECRET}1, crm:ingest+reader:{SECRET}2
    ops:ADMIN:{SECRET}:with:colons
    """

    keys = parse_keys(text, "ENISHI_API_KEYS")

    assert [(k.name, sorted(k.roles)) for k in keys] == [
        ("shop", [Role.INGEST]),
        ("crm", [Role.INGEST, Role.READER]),
        ("ops", [Role.ADMIN]),
    ]
    assert keys[2].secret == f"{SECRET}:with:colons"
    assert parse_keys(keys[1].entry(), "x")[0] == keys[1]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("shop-only-a-name", "entry 1: expected name:role[+role]:secret"),
        (f":ingest:{SECRET}", "entry 1: key name must be"),
        (f"shop:root:{SECRET}", "entry 1: key 'shop': unknown role 'root', expected ingest"),
        ("shop:ingest:short-secret", "entry 1: key 'shop': secret shorter than 24 characters"),
        (f"shop:ingest:{SECRET} x", "key 'shop': secret must be printable ASCII without spaces"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_key_but_never_its_secret(
    entry: str, message: str
) -> None:
    with pytest.raises(ApiKeysError) as caught:
        parse_keys(entry, "ENISHI_API_KEYS")

    assert message in str(caught.value)
    assert "short-secret" not in str(caught.value) and SECRET not in str(caught.value)


def test_the_second_bad_entry_is_located_by_its_number() -> None:
    with pytest.raises(ApiKeysError, match="ENISHI_API_KEYS entry 2: key 'b'"):
        parse_keys(f"a:reader:{SECRET},b:reader:tooshort", "ENISHI_API_KEYS")


def test_a_key_ring_refuses_duplicate_names_and_shared_secrets() -> None:
    with pytest.raises(ApiKeysError, match="key 'a' appears twice"):
        KeyRing(parse_keys(f"a:reader:{SECRET}1,a:ingest:{SECRET}2", "x"))
    with pytest.raises(ApiKeysError, match="keys 'a' and 'b' share a secret"):
        KeyRing(parse_keys(f"a:reader:{SECRET},b:ingest:{SECRET}", "x"))


def test_a_key_ring_finds_a_key_by_its_secret_and_keeps_no_secret() -> None:
    ring = KeyRing(parse_keys(f"a:reader:{SECRET}1,b:ingest:{SECRET}2", "x"))

    found = ring.identify(f"{SECRET}2")

    assert found is not None and found.name == "b" and found.roles == {Role.INGEST}
    assert found.secret == ""
    assert ring.identify(f"{SECRET}3") is None
    assert ring.identify(SECRET) is None  # a prefix of a key is no key
    assert ring.names == ["a", "b"]


def test_a_key_never_shows_its_secret_in_its_repr() -> None:
    key = ApiKey("shop", frozenset({Role.INGEST}), SECRET)
    assert SECRET not in repr(key) and "shop" in repr(key)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("authorization", f"Bearer {SECRET}"),), SECRET),
        ((("authorization", f"bearer  {SECRET} "),), SECRET),
        ((("x-api-key", SECRET),), SECRET),
        ((("x-request-id", "r1"), ("authorization", f"BEARER {SECRET}")), SECRET),
        ((("authorization", f"Basic {SECRET}"),), None),
        ((("x-api-key", SECRET.encode()),), None),
        ((), None),
        (None, None),
    ],
)
def test_the_key_is_read_from_authorization_bearer_or_x_api_key(
    metadata: Any, expected: str | None
) -> None:
    assert presented_secret(metadata) == expected


def guard(text: str) -> Guard:
    return Guard(KeyRing(parse_keys(text, "x")))


def test_the_guard_answers_unauthenticated_without_a_key_or_with_an_unknown_one() -> None:
    checking = guard(f"shop:ingest:{SECRET}")

    with pytest.raises(Unauthenticated, match="no API key; .* role ingest"):
        checking.admit("/enishi.v1.IngestService/Track", ())
    with pytest.raises(Unauthenticated, match="unknown API key") as caught:
        checking.admit("/enishi.v1.IngestService/Track", (("x-api-key", "x" * 30),))
    assert "x" * 30 not in str(caught.value)


def test_the_guard_answers_permission_denied_naming_the_role_needed() -> None:
    checking = guard(f"shop:ingest:{SECRET}")

    with pytest.raises(PermissionDenied) as caught:
        checking.admit("/enishi.v1.JourneyRegistry/RegisterJourney", (("x-api-key", SECRET),))

    message = str(caught.value)
    assert "needs role designer" in message and "'shop' has ingest" in message
    assert SECRET not in message


def test_the_guard_names_the_caller_and_lets_admin_do_everything() -> None:
    checking = guard(f"shop:ingest:{SECRET}1,ops:admin:{SECRET}2")
    shop, ops = (("x-api-key", f"{SECRET}1"),), (("x-api-key", f"{SECRET}2"),)

    assert checking.admit("/enishi.v1.IngestService/Track", shop) == "shop"
    for method in [*METHOD_ROLES, "/enishi.v2.Future/Method"]:
        assert checking.admit(method, ops) == "ops"
    assert checking.admit("/grpc.health.v1.Health/Check", ()) is None
    with pytest.raises(PermissionDenied, match="needs role admin"):
        checking.admit("/enishi.v2.Future/Method", shop)


def settings(**values: Any) -> GrpcServiceSettings:
    return GrpcServiceSettings(**values)


def test_a_service_without_keys_refuses_to_start_with_the_variables_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        guard_from_settings(settings())

    assert caught.value.env_var == "ENISHI_API_KEYS"
    assert "ENISHI_API_KEYS_FILE" in str(caught.value)
    assert "ENISHI_AUTH_DISABLED=true" in str(caught.value)


def test_auth_can_be_disabled_only_on_purpose() -> None:
    assert guard_from_settings(settings(auth_disabled=True)).disabled
    assert Guard(None).admit("/enishi.v1.IngestService/Track", ()) is None


def test_keys_come_from_the_variable_and_the_file_together(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# rotated in March\nnew:designer:{SECRET}new\n")

    checking = guard_from_settings(
        settings(api_keys=SecretStr(f"old:designer:{SECRET}old"), api_keys_file=keys_file)
    )

    assert checking.key_names == ["old", "new"]
    for secret in (f"{SECRET}old", f"{SECRET}new"):
        metadata = (("authorization", f"Bearer {secret}"),)
        assert checking.admit("/enishi.v1.JourneyRegistry/RegisterJourney", metadata)


def test_a_short_key_stops_the_service_naming_the_key_and_the_variable(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("ok:reader:" + SECRET + "\nweak:reader:password123\n")

    with pytest.raises(ConfigurationError) as caught:
        guard_from_settings(settings(api_keys_file=keys_file))

    assert caught.value.env_var == "ENISHI_API_KEYS_FILE"
    assert "entry 2: key 'weak': secret shorter than 24" in str(caught.value)
    assert "password123" not in str(caught.value)


def test_a_missing_keys_file_stops_the_service(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read") as caught:
        guard_from_settings(settings(api_keys_file=tmp_path / "nope"))
    assert caught.value.env_var == "ENISHI_API_KEYS_FILE"


def test_the_same_key_in_the_variable_and_the_file_is_refused(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"a:reader:{SECRET}\n")

    with pytest.raises(ConfigurationError, match="key 'a' appears twice"):
        guard_from_settings(
            settings(api_keys=SecretStr(f"a:reader:{SECRET}"), api_keys_file=keys_file)
        )


# -- the local stack's keys and the clients' fallback ------------------------------------


def test_the_dev_stack_writes_one_private_key_per_role_once(tmp_path: Path) -> None:
    written = api_keys.ensure(tmp_path)

    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    keys = auth.read_keys_file(written)
    assert {k.name: set(k.roles) for k in keys} == {f"dev-{role.value}": {role} for role in Role}
    KeyRing(keys)  # distinct, long enough
    before = written.read_text()
    written.chmod(0o644)
    assert api_keys.ensure(tmp_path) == written
    assert written.read_text() == before  # made once: the services and the CLI agree
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    admin = next(k for k in keys if Role.ADMIN in k.roles)
    assert api_keys.admin_key(tmp_path) == admin.secret


def test_there_is_no_dev_admin_key_without_a_dev_stack(tmp_path: Path) -> None:
    assert api_keys.admin_key(tmp_path) is None


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("dns:///localhost:50051", True),
        ("ingest.enishi.svc:50051", False),
        ("10.0.0.7:50051", False),
        ("[2001:db8::1]:50051", False),
    ],
)
def test_loopback_targets_are_recognised(target: str, loopback: bool) -> None:
    assert grpc_client.is_loopback(target) is loopback


def test_clients_send_the_configured_key_else_the_dev_admin_key_to_loopback_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENISHI_DEV_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("ENISHI_API_KEY", raising=False)
    api_keys.ensure(tmp_path)
    dev_admin = api_keys.admin_key(tmp_path)
    unset = GrpcClientSettings()

    assert dev_admin is not None
    assert grpc_client.api_key("127.0.0.1:50051", unset) == dev_admin
    assert grpc_client.api_key("ingest.prod:50051", unset) is None
    mine = GrpcClientSettings(api_key=SecretStr(SECRET))
    assert grpc_client.api_key("127.0.0.1:50051", mine) == SECRET
    assert grpc_client.api_key("ingest.prod:50051", mine) == SECRET
