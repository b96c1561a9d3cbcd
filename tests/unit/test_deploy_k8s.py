"""deploy/k8s: every object passes the Kubernetes schema offline and matches the catalogue.

kubernetes-validate carries the Kubernetes JSON schemas in its wheel, so the schema check
needs no cluster and no network. Everything else is read from the manifests and compared
with `enishi.catalog`, `enishi.config` and `enishi.topics`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from enishi.catalog import PRODUCTION_SERVICES as SERVICES
from enishi.catalog import ServiceSpec
from enishi.config import CommonSettings, GrpcServiceSettings
from enishi.topics import all_topics

pytestmark = pytest.mark.unit

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest Kubernetes we support (native gRPC probes are GA since 1.27) and a recent one.
K8S_VERSIONS = ("1.30", "1.35")
NAMESPACE = "enishi"
CONFIGMAP = "enishi-config"
SECRET = "enishi-secrets"
WORKLOAD_KINDS = {"Deployment", "Job"}

Obj = dict[str, Any]


def _load() -> tuple[Obj, list[tuple[str, Obj]]]:
    kustomization: Obj | None = None
    objects: list[tuple[str, Obj]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path.name}: every document must be a mapping"
            if doc.get("kind") == "Kustomization":
                kustomization = doc
            else:
                objects.append((path.name, doc))
    assert kustomization is not None, "deploy/k8s/kustomization.yaml is missing"
    return kustomization, objects


KUSTOMIZATION, OBJECTS = _load()


def _one(kind: str, name: str) -> Obj:
    found = [o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _of_kind(kind: str) -> list[Obj]:
    return [o for _, o in OBJECTS if o["kind"] == kind]


def _pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def _setting_names(settings: type[CommonSettings]) -> set[str]:
    """The environment variable names a settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def _container(spec: ServiceSpec) -> Obj:
    containers = _pod_spec(_one("Deployment", spec.name))["containers"]
    assert [c["name"] for c in containers] == [spec.name]
    container: Obj = containers[0]
    return container


def _port_number(container: Obj, port: int | str) -> int:
    """A probe's or Service's port, resolved through the container's named ports."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in named, f"{container['name']}: no container port named {port!r}"
    return int(named[port])


def _secret_keys() -> set[str]:
    secret = _one("Secret", SECRET)
    return set(secret.get("data") or {}) | set(secret.get("stringData") or {})


# --- the files ------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_file() -> None:
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == files
    assert KUSTOMIZATION["namespace"] == NAMESPACE
    assert _one("Namespace", NAMESPACE)


def test_every_object_has_kind_name_and_no_duplicate() -> None:
    keys = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for _, o in OBJECTS]
    duplicates = [key for key, count in Counter(keys).items() if count > 1]
    assert duplicates == []
    assert {kind for _, kind, _ in keys} == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Job",
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "obj",
    [o for _, o in OBJECTS],
    ids=[f"{f}:{o['kind']}/{o['metadata']['name']}" for f, o in OBJECTS],
)
def test_object_passes_the_kubernetes_schema(obj: Obj, version: str) -> None:
    # strict: unknown fields (a typo such as `readinesProbe`) fail too.
    kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_catches_a_misspelt_field() -> None:
    broken = yaml.safe_load(yaml.safe_dump(_one("Deployment", SERVICES[0].name)))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_no_image_is_unpinned_or_latest() -> None:
    for _, obj in OBJECTS:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        for container in _pod_spec(obj)["containers"]:
            name = container["image"].rsplit("/", 1)[-1]
            tag = name.split(":", 1)[1] if ":" in name else None
            assert tag not in (None, "latest"), f"{container['name']}: pin {container['image']}"


# --- settings -------------------------------------------------------------------------------


def test_configmap_keys_are_settings_every_service_reads() -> None:
    common = set.intersection(*(_setting_names(spec.settings) for spec in SERVICES))
    keys = set(_one("ConfigMap", CONFIGMAP)["data"])
    assert keys - common == set()
    assert {
        "ENISHI_KAFKA_BOOTSTRAP",
        "ENISHI_KAFKA_IDEMPOTENCE",
        "ENISHI_REDIS_URL",
        "ENISHI_TEMPORAL_ADDRESS",
        "ENISHI_TEMPORAL_NAMESPACE",
        "ENISHI_LOG_FORMAT",
    } <= keys


def test_secret_is_a_placeholder_with_only_setting_names() -> None:
    keys = _secret_keys()
    common = set.intersection(*(_setting_names(spec.settings) for spec in SERVICES))
    assert keys - common == set()
    assert keys == set(), "deploy/k8s/secret.yaml must not carry values; see docs/deploy.md"


def test_configmap_addresses_are_not_localhost() -> None:
    data = _one("ConfigMap", CONFIGMAP)["data"]
    for key in ("ENISHI_KAFKA_BOOTSTRAP", "ENISHI_REDIS_URL", "ENISHI_TEMPORAL_ADDRESS"):
        assert "localhost" not in data[key] and "127.0.0.1" not in data[key], key
    assert data["ENISHI_KAFKA_IDEMPOTENCE"] == "true"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_deployment_env_names_are_settings_of_the_service(spec: ServiceSpec) -> None:
    container = _container(spec)
    names = {e["name"] for e in container.get("env", []) if e["name"].startswith("ENISHI_")}
    assert names - _setting_names(spec.settings) == set()
    refs = container["envFrom"]
    assert {"configMapRef": {"name": CONFIGMAP}} in refs
    assert {"secretRef": {"name": SECRET, "optional": True}} in refs


@pytest.mark.parametrize("spec", [s for s in SERVICES if s.grpc_port], ids=lambda s: s.name)
def test_grpc_deployments_take_their_api_keys_from_a_secret_never_a_value(
    spec: ServiceSpec,
) -> None:
    (entry,) = [e for e in _container(spec)["env"] if e["name"] == "ENISHI_API_KEYS"]
    assert entry == {
        "name": "ENISHI_API_KEYS",
        "valueFrom": {"secretKeyRef": {"name": "enishi-api-keys", "key": "ENISHI_API_KEYS"}},
    }


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_deployment_settings_parse_and_match_the_catalogue(
    spec: ServiceSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("ENISHI_"):
            monkeypatch.delenv(name)
    for name, value in _one("ConfigMap", CONFIGMAP)["data"].items():
        monkeypatch.setenv(name, value)
    for entry in _container(spec).get("env", []):
        if "value" in entry:  # not the secretKeyRef ones (API keys)
            monkeypatch.setenv(entry["name"], entry["value"])
    settings = spec.settings()
    assert settings.metrics_port == spec.metrics_port
    if spec.grpc_port is not None:
        assert isinstance(settings, GrpcServiceSettings)
        assert settings.grpc_port == spec.grpc_port
    assert settings.kafka_idempotence is True


# --- each service ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_deployment_runs_the_service_module(spec: ServiceSpec) -> None:
    container = _container(spec)
    assert container["image"].split(":")[0] == "enishi"
    assert "command" not in container, "the image's ENTRYPOINT is `python -m`"
    assert container["args"] == [spec.module]


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_service_ports_match_the_catalogue(spec: ServiceSpec) -> None:
    container = _container(spec)
    expected = {"metrics": spec.metrics_port, **spec.extra_port_numbers}
    if spec.grpc_port is not None:
        expected["grpc"] = spec.grpc_port
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected

    service = _one("Service", spec.name)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == expected
    for port in service["spec"]["ports"]:
        assert _port_number(container, port["targetPort"]) == expected[port["name"]]
    labels = _one("Deployment", spec.name)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_probes_use_grpc_health_and_the_metrics_endpoint(spec: ServiceSpec) -> None:
    container = _container(spec)
    readiness = container["readinessProbe"]
    if spec.grpc_port is not None:
        assert readiness["grpc"]["port"] == spec.grpc_port
    else:
        assert readiness["httpGet"]["path"] == "/readyz"
        assert _port_number(container, readiness["httpGet"]["port"]) == spec.metrics_port
    for probe in ("livenessProbe", "startupProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz"
        assert _port_number(container, http["port"]) == spec.metrics_port


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_prometheus_scrapes_the_metrics_port(spec: ServiceSpec) -> None:
    annotations = _one("Deployment", spec.name)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(spec.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_shutdown_grace_fits_in_the_termination_grace_period(spec: ServiceSpec) -> None:
    grace = _pod_spec(_one("Deployment", spec.name))["terminationGracePeriodSeconds"]
    default = spec.settings.model_fields.get("shutdown_grace_seconds")
    if default is not None:
        assert grace > default.default


def test_every_catalogue_service_and_only_those_are_deployed() -> None:
    names = {spec.name for spec in SERVICES}
    assert {d["metadata"]["name"] for d in _of_kind("Deployment")} == names
    assert {s["metadata"]["name"] for s in _of_kind("Service")} == names


# --- every workload -------------------------------------------------------------------------


def _workloads() -> list[Obj]:
    return [o for _, o in OBJECTS if o["kind"] in WORKLOAD_KINDS]


def test_no_container_runs_as_root() -> None:
    for obj in _workloads():
        pod = _pod_spec(obj)
        pod_ctx = pod.get("securityContext", {})
        for container in pod["containers"]:
            ctx = {**pod_ctx, **container.get("securityContext", {})}
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            assert ctx.get("runAsNonRoot") is True, where
            assert ctx.get("runAsUser", 0) != 0, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where


def test_every_container_has_resource_requests_and_limits() -> None:
    for obj in _workloads():
        for container in _pod_spec(obj)["containers"]:
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{container['name']}: {bound}"


def test_workloads_only_reference_the_configmap_and_secret_that_exist() -> None:
    configmaps = {c["metadata"]["name"] for c in _of_kind("ConfigMap")}
    secrets = {s["metadata"]["name"] for s in _of_kind("Secret")}
    for obj in _workloads():
        for container in _pod_spec(obj)["containers"]:
            for ref in container.get("envFrom", []):
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in secrets
            for entry in container.get("env", []):
                key_ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                if key_ref:
                    assert key_ref["name"] in configmaps
                    assert key_ref["key"] in _one("ConfigMap", key_ref["name"])["data"]


def test_topic_job_creates_every_topic() -> None:
    job = _one("Job", "kafka-topics")
    container = _pod_spec(job)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert sorted(env["TOPICS"]["value"].split()) == sorted(all_topics())
    assert env["ENISHI_KAFKA_BOOTSTRAP"]["valueFrom"]["configMapKeyRef"] == {
        "name": CONFIGMAP,
        "key": "ENISHI_KAFKA_BOOTSTRAP",
    }
    script = "\n".join(container["args"])
    assert "${TOPICS}" in script and "--create" in script and "--if-not-exists" in script
    assert int(env["REPLICATION_FACTOR"]["value"]) >= 3, "production topics need replicas"
