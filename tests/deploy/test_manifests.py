"""The Dockerfile, compose.yaml and Kubernetes manifests against what the app really has.

Ports, probe paths, settings and volumes named in deployment files are easy to
get wrong silently; these checks read the files and compare them with the app
(its routes, its Settings, its command line). No Docker or cluster needed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from app.cli import build_parser
from app.config import Settings
from app.main import create_app
from training.default_model import DATA_ENV, SEED_ENV

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
# Read by the training package straight from the environment, not by Settings.
EXTRA_ENV = {DATA_ENV, SEED_ENV}


def setting_names() -> set[str]:
    return {f"INTENTLY_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The real app, without a model (none is needed to answer the probes)."""
    with TestClient(create_app(Settings(model_dir=Path("/nonexistent")))) as client:
        yield client


@pytest.fixture(scope="module")
def get_routes(client: TestClient) -> set[str]:
    return {path for path, ops in client.app.openapi()["paths"].items() if "get" in ops}


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[str]]:
    """Instructions of the final stage, continuation lines joined: {"EXPOSE": ["8000"], ...}."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    final = text.split("\nFROM ")[-1]
    stages = [line.split()[1] for line in text.splitlines() if line.startswith("FROM")]
    out: dict[str, list[str]] = {"FROM": stages}
    for line in final.splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            out.setdefault(keyword, []).append(rest.strip())
    return out


def dockerfile_env(dockerfile: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in dockerfile.get("ENV", []):
        env.update(dict(part.split("=", 1) for part in shlex.split(line)))
    return env


def graceful_timeout() -> int:
    """The seconds uvicorn gives requests in flight after SIGTERM (set in app/config.py)."""
    from app.config import UVICORN_OPTIONS

    timeout = UVICORN_OPTIONS.get("timeout_graceful_shutdown")
    assert isinstance(timeout, int), "app/config.py no longer sets timeout_graceful_shutdown"
    return timeout


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def quantity(value: str | int) -> float:
    """A Kubernetes quantity as a number: '500m' -> 0.5, '2Gi' -> 2 * 2**30."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([\d.]+)(m|Ki|Mi|Gi)?", str(value))
    assert match, value
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


# --- Kubernetes ---------------------------------------------------------------


def test_every_manifest_parses_and_kustomization_lists_them(manifests: dict[str, dict[str, Any]]) -> None:
    assert set(manifests) >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Kustomization",
    }
    listed = set(manifests["Kustomization"]["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_container_port_is_the_app_port(container: dict[str, Any], dockerfile: dict[str, list[str]]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = int(env.get("INTENTLY_PORT") or Settings.model_fields["port"].default)
    assert ports == {"http": port}
    assert dockerfile["EXPOSE"] == [str(port)]
    assert dockerfile_env(dockerfile)["INTENTLY_PORT"] == str(port)


def test_probes_hit_real_routes(container: dict[str, Any], get_routes: set[str], client: TestClient) -> None:
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] in get_routes, f"{probe} path {http['path']} is not a GET route of the app"
        assert http["port"] in {p["name"] for p in container["ports"]}
    # Without a model: alive, but not ready (so no traffic is sent its way).
    assert client.get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200
    assert client.get(container["readinessProbe"]["httpGet"]["path"]).status_code == 503


def test_env_vars_are_real_settings_with_valid_values(
    container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))
    unknown = {n for n in names if n.startswith("INTENTLY_")} - setting_names()
    assert not unknown, f"not Settings fields: {unknown}"
    for e in container["env"]:
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    Settings()  # every literal value validates


def test_admin_token_comes_from_a_secret(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    (token,) = [e for e in container["env"] if e["name"] == "INTENTLY_ADMIN_TOKEN"]
    assert "value" not in token
    assert set(token["valueFrom"]["secretKeyRef"]) >= {"name", "key"}
    assert "Secret" not in manifests, "no Secret (or token) belongs in the repository"


def test_store_volume_is_a_shared_claim(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    pvc = manifests["PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [name for name, claim in claims.items() if claim == pvc["metadata"]["name"]]
    env = {e["name"]: e.get("value") for e in container["env"]}
    store = Path(env["INTENTLY_MODEL_STORE"])
    assert store == Path(mounts[volume]) or Path(mounts[volume]) in store.parents


def test_pod_runs_as_the_image_user_on_a_read_only_root(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any], dockerfile: dict[str, list[str]]
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    uid = dockerfile["USER"][0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["fsGroup"] == int(dockerfile["USER"][0].split(":")[1])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"])


def test_resources_and_shutdown(manifests: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind])
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > graceful_timeout()
    assert container["args"] == ["serve"]
    assert build_parser().parse_args(container["args"]).command == "serve"


def test_service_and_autoscaler_point_at_the_deployment(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifests["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {p["targetPort"] for p in service["ports"]} <= {p["name"] for p in container["ports"]}
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "intently"}
    assert deployment["metadata"]["name"] == "intently"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert any(m["resource"]["name"] == "cpu" for m in hpa["metrics"])


# --- compose.yaml --------------------------------------------------------------


def test_compose_service(dockerfile: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    env = service["environment"]
    assert set(env) <= setting_names()
    assert env["INTENTLY_ADMIN_TOKEN"] is None  # taken from the caller's environment, never written here
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, str(value))
    Settings()
    volume_mounts = [v.split(":") for v in service["volumes"]]
    assert [(name, path) for name, path in volume_mounts if name in compose["volumes"]] == [
        ("intently-store", dockerfile["VOLUME"][0].strip('[]"'))
    ]
    assert any(p.endswith(":" + dockerfile["EXPOSE"][0]) for p in service["ports"])
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert seconds(service["stop_grace_period"]) > graceful_timeout()


# --- Dockerfile ----------------------------------------------------------------


def test_dockerfile_contract(dockerfile: dict[str, list[str]], get_routes: set[str]) -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\w+)", text, re.MULTILINE))
    assert set(dockerfile["FROM"]) - stages == {"python:3.11-slim"}  # a later stage may start from an earlier
    assert dockerfile["ENTRYPOINT"] == ['["intently"]'] and dockerfile["CMD"] == ['["serve"]']
    env = dockerfile_env(dockerfile)
    assert env["INTENTLY_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert set(k for k in env if k.startswith("INTENTLY_")) <= setting_names() | EXTRA_ENV
    assert env["INTENTLY_MODEL_STORE"].startswith(dockerfile["VOLUME"][0].strip('[]"'))
    (health,) = dockerfile["HEALTHCHECK"]
    path = re.search(r"127\.0\.0\.1:%s(/\w+)", health)
    assert path and path.group(1) in get_routes
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
