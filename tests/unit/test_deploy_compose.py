"""docker-compose.yml and the Dockerfile, checked offline: there is no Docker engine here.

No compose-spec JSON schema ships in an installed package, so the checks are structural:
every enishi service of the catalogue is present and built from the one Dockerfile, its
ENISHI_* variables are real settings that parse, infrastructure is reached by compose
hostname, ports do not clash, health checks and depends_on conditions hold together.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from enishi.catalog import SERVICES, ServiceSpec
from enishi.config import CommonSettings, GrpcServiceSettings
from enishi.topics import all_topics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Jobs that run once and exit; everything else is long-running and must be healthy.
ONE_SHOT_JOBS = {"kafka-topics", "temporal-schema", "temporal-namespace"}
INFRASTRUCTURE = {"kafka", "postgresql", "temporal", "temporal-ui", "redis"}
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?::?-(?P<default>[^}]*)|:?\?(?P<required>[^}]*))?\}"
)
# Secrets a service cannot start without: compose must refuse to start when they are unset
# (`${VAR:?message}`), never fall back to a value committed here.
REQUIRED_SECRETS = {"email": {"ENISHI_UNSUBSCRIBE_SECRET"}}


def _load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml: top level must be a mapping"
    return data


COMPOSE = _load_compose()
COMPOSE_SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _resolve(value: object) -> str:
    """`value` as compose would see it with no variables set: `${X:-d}` becomes `d`; a
    required `${X:?m}` (compose refuses to start without it) becomes empty."""
    return _INTERPOLATION.sub(lambda m: m.group("default") or "", str(value))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _resolve(v) for k, v in env.items()}


def _setting_names(settings: type[CommonSettings]) -> set[str]:
    """The environment variable names a settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _host_ports(service: dict[str, Any]) -> list[int]:
    published: list[int] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.append(int(_resolve(port["published"])))
            continue
        parts = _resolve(port).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {port!r}: publish explicitly as HOST:CONTAINER"
        published.append(int(parts[-2]))
    return published


def _image_tag(image: str) -> str | None:
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else None


def _settings_from(
    env: dict[str, str], spec: ServiceSpec, mp: pytest.MonkeyPatch
) -> CommonSettings:
    for name in list(os.environ):
        if name.startswith("ENISHI_"):
            mp.delenv(name)
    for name, value in env.items():
        mp.setenv(name, value)
    return spec.settings()


# --- compose: shape -------------------------------------------------------------------------


def test_compose_runs_the_expected_services() -> None:
    expected = INFRASTRUCTURE | ONE_SHOT_JOBS | {spec.name for spec in SERVICES}
    assert set(COMPOSE_SERVICES) == expected


def test_every_compose_service_has_an_image_or_a_build() -> None:
    missing = [n for n, s in COMPOSE_SERVICES.items() if "image" not in s and "build" not in s]
    assert missing == []


def test_no_image_is_unpinned_or_latest() -> None:
    for name, service in COMPOSE_SERVICES.items():
        image = _resolve(service["image"])
        tag = _image_tag(image)
        assert tag not in (None, "", "latest"), f"{name}: image {image!r} needs a pinned tag"


def test_kafka_is_apache_kafka_in_kraft_mode() -> None:
    kafka = COMPOSE_SERVICES["kafka"]
    assert _resolve(kafka["image"]).startswith("apache/kafka:")
    env = _environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert not any("zookeeper" in name for name in COMPOSE_SERVICES)


def test_temporal_persists_to_the_compose_postgresql() -> None:
    temporal = _environment(COMPOSE_SERVICES["temporal"])
    assert temporal["DB"].startswith("postgres")
    assert temporal["POSTGRES_SEEDS"] == "postgresql"
    assert _resolve(COMPOSE_SERVICES["postgresql"]["image"]).startswith("postgres:")
    schema = _environment(COMPOSE_SERVICES["temporal-schema"])
    assert schema["POSTGRES_SEEDS"] == "postgresql"
    assert schema["SQL_PASSWORD"] == temporal["POSTGRES_PWD"]


def test_redis_is_version_7_with_append_only_file() -> None:
    redis = COMPOSE_SERVICES["redis"]
    assert _resolve(redis["image"]).startswith("redis:7.")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_bind_mounted_files_exist() -> None:
    for name, service in COMPOSE_SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts missing {source}"


# --- compose: enishi services ---------------------------------------------------------------


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_enishi_service_is_built_from_the_dockerfile_and_runs_its_module(
    spec: ServiceSpec,
) -> None:
    service = COMPOSE_SERVICES[spec.name]
    build = service["build"]
    assert build["context"] == "."
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")) == DOCKERFILE
    assert service["command"] == [spec.module]


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_enishi_service_sets_only_real_settings(spec: ServiceSpec) -> None:
    enishi_vars = {k for k in _environment(COMPOSE_SERVICES[spec.name]) if k.startswith("ENISHI_")}
    unknown = enishi_vars - _setting_names(spec.settings)
    assert unknown == set(), f"{spec.name}: not settings of {spec.settings.__name__}: {unknown}"


@pytest.mark.parametrize("spec", [s for s in SERVICES if s.grpc_port], ids=lambda s: s.name)
def test_grpc_services_need_api_keys_from_the_environment_and_commit_none(
    spec: ServiceSpec,
) -> None:
    keys = COMPOSE_SERVICES[spec.name]["environment"]["ENISHI_API_KEYS"]
    assert keys.startswith("${ENISHI_API_KEYS:?"), "compose must stop when no keys are set"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_enishi_service_settings_parse_and_match_the_catalogue(
    spec: ServiceSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_from(_environment(COMPOSE_SERVICES[spec.name]), spec, monkeypatch)
    assert settings.metrics_port == spec.metrics_port
    if spec.grpc_port is not None:
        assert isinstance(settings, GrpcServiceSettings)
        assert settings.grpc_port == spec.grpc_port
    assert settings.kafka_idempotence is True, "Apache Kafka: idempotent producers must be on"
    assert settings.log_format == "json"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_enishi_service_reaches_infrastructure_by_compose_hostname(spec: ServiceSpec) -> None:
    env = _environment(COMPOSE_SERVICES[spec.name])
    kafka_hosts = [address.rsplit(":", 1) for address in env["ENISHI_KAFKA_BOOTSTRAP"].split(",")]
    advertised = _environment(COMPOSE_SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    for host, port in kafka_hosts:
        assert host == "kafka"
        assert f"//{host}:{port}" in advertised, f"kafka does not advertise {host}:{port}"
    redis = urlsplit(env["ENISHI_REDIS_URL"])
    assert (redis.scheme, redis.hostname) == ("redis", "redis")
    temporal_host, temporal_port = env["ENISHI_TEMPORAL_ADDRESS"].rsplit(":", 1)
    assert (temporal_host, temporal_port) == ("temporal", "7233")
    assert (
        env["ENISHI_TEMPORAL_NAMESPACE"]
        == _environment(COMPOSE_SERVICES["temporal-namespace"])["NAMESPACE"]
    )


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_enishi_service_publishes_its_catalogue_ports(spec: ServiceSpec) -> None:
    service = COMPOSE_SERVICES[spec.name]
    expected = {spec.metrics_port} | ({spec.grpc_port} if spec.grpc_port is not None else set())
    if spec.production:  # the LINE webhook, the unsubscribe endpoint; not the sandbox's fakes
        expected |= set(spec.extra_port_numbers.values())
    assert set(_host_ports(service)) == expected
    assert "ENISHI_METRICS_PORT" in " ".join(service["healthcheck"]["test"])


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_secrets_a_service_needs_are_required_not_defaulted(spec: ServiceSpec) -> None:
    environment = COMPOSE_SERVICES[spec.name].get("environment", {})
    for name in REQUIRED_SECRETS.get(spec.name, set()):
        match = _INTERPOLATION.fullmatch(str(environment.get(name, "")))
        assert match is not None and match["name"] == name, f"{spec.name}: {name} not from ${name}"
        assert match["required"] is not None, f"{spec.name}: {name} must be ${{{name}:?...}}"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_enishi_service_waits_for_topics_redis_and_temporal(spec: ServiceSpec) -> None:
    assert _depends_on(COMPOSE_SERVICES[spec.name]) == {
        "kafka-topics": "service_completed_successfully",
        "redis": "service_healthy",
        "temporal-namespace": "service_completed_successfully",
    }


# --- compose: the whole graph ---------------------------------------------------------------


def test_published_host_ports_do_not_clash() -> None:
    seen: dict[int, str] = {}
    for name, service in COMPOSE_SERVICES.items():
        for port in _host_ports(service):
            assert port not in seen, f"host port {port}: {seen.get(port)} and {name}"
            seen[port] = name
    assert {9092, 7233, 8080, 6379} <= set(seen)


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in COMPOSE_SERVICES.items():
        if name in ONE_SHOT_JOBS:
            assert service.get("restart") == "no", f"{name}: a one-shot job must not restart"
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"{name}: needs a healthcheck"


def test_depends_on_targets_exist_and_conditions_fit_them() -> None:
    for name, service in COMPOSE_SERVICES.items():
        for target, condition in _depends_on(service).items():
            assert target in COMPOSE_SERVICES, f"{name}: depends on unknown service {target}"
            if target in ONE_SHOT_JOBS:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}: {condition}"


def test_depends_on_has_no_cycle() -> None:
    graph = {name: set(_depends_on(service)) for name, service in COMPOSE_SERVICES.items()}
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {n for n, deps in graph.items() if n not in done and deps <= done}
        assert ready, f"dependency cycle among {set(graph) - done}"
        done |= ready


def test_topic_job_creates_every_topic() -> None:
    job = COMPOSE_SERVICES["kafka-topics"]
    env = _environment(job)
    assert sorted(env["TOPICS"].split()) == sorted(all_topics())
    script = "\n".join(job["command"])
    assert "$$TOPICS" in script and "--create" in script and "--if-not-exists" in script
    assert (
        env["BOOTSTRAP"]
        == _environment(COMPOSE_SERVICES[SERVICES[0].name])["ENISHI_KAFKA_BOOTSTRAP"]
    )


# --- Dockerfile -----------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped) per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile: UV_VERSION not found"
    return match.group(1)


def test_dockerfile_installs_the_makefile_uv_version() -> None:
    text = DOCKERFILE.read_text()
    version = _makefile_uv_version()
    assert f"ARG UV_VERSION={version}\n" in text
    assert 'pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"' in text


def test_dockerfile_installs_from_the_lock_without_local_or_dev_extras() -> None:
    instructions = [line for stage in _dockerfile_stages() for line in stage]
    installs = [line for line in instructions if re.search(r"\buv (sync|export|pip)\b", line)]
    assert installs, "Dockerfile: no uv install found"
    for line in installs:
        assert "--locked" in line, line
        assert "--all-extras" not in line and "--extra" not in line, line
    joined = "\n".join(instructions)
    for extra in ("local", "dev"):
        assert f"[{extra}]" not in joined
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for package in (*extras["local"], *extras["dev"]):
        name = re.split(r"[<>=\[;! ]", package, maxsplit=1)[0]
        assert name not in joined, f"Dockerfile installs {name} from an extra"


def test_dockerfile_runtime_stage_copies_the_venv_and_runs_as_non_root() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "Dockerfile: expected a multi-stage build"
    runtime = stages[-1]
    assert not any(re.search(r"\b(pip|uv) (install|sync)\b", line) for line in runtime)
    assert any(line.startswith("COPY --from=build /opt/enishi") for line in runtime)
    users = [line.split()[1].split(":")[0] for line in runtime if line.startswith("USER ")]
    assert users and users[-1] not in ("0", "root")
    assert 'ENTRYPOINT ["python", "-m"]' in runtime


def test_dockerfile_copies_every_package_the_wheel_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    build = _dockerfile_stages()[0]
    copied = {line.split()[1] for line in build if line.startswith("COPY ")}
    assert set(packages) <= copied
    assert {"pyproject.toml", "uv.lock", "README.md"} <= {
        part for line in build if line.startswith("COPY ") for part in line.split()[1:-1]
    }


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".tools", ".enishi", "tests"} <= ignored
    assert not {"enishi", "services", "workflows", "uv.lock", "pyproject.toml"} & ignored


def test_namespace_job_registers_every_workflow_search_attribute() -> None:
    from workflows.contract import SEARCH_ATTRIBUTES

    script = (ROOT / "deploy" / "compose" / "temporal" / "create-namespace.sh").read_text()
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert f"{name}={kind}" in script
