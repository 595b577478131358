"""infra/k8s: the Kubernetes manifests of the production stack.

Built-in kinds are validated (strict: unknown fields refused) against the Kubernetes
schemas `kubernetes-validate` ships; the KubeRay kinds' pod templates are validated as
``PodTemplate`` objects and their Ray specifics checked here; the RayService's
``serveConfigV2`` is ``infra/serve.yaml`` and passes Ray's own ``ServeDeploySchema`` and
the app builder. Every Secret, ConfigMap and volume claim a workload names exists, with
the key it reads.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from regimes.serve.app import app_builder
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

K8S = REPO_ROOT / "infra" / "k8s"
KUBERNETES_VERSION = kubernetes_validate.latest_version()
KUBERAY_KINDS = {"RayCluster", "RayService"}
PLACEHOLDER = "REPLACE_ME"


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [(name, doc) for name in kustomization["resources"] for doc in _documents(K8S / name)]


MANIFESTS = _manifests()


def _ids(items):
    return [f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in items]


def _pod_specs(doc: dict) -> list[dict]:
    """Every pod spec a workload runs, KubeRay's included."""
    spec = doc.get("spec", {})
    if doc["kind"] == "RayService":
        spec = spec["rayClusterConfig"]
    if doc["kind"] in KUBERAY_KINDS:
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        return [group["template"]["spec"] for group in groups]
    if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
        return [spec["template"]["spec"]]
    return []


def _settings() -> dict:
    return next(
        doc
        for _, doc in MANIFESTS
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "regimes-settings"
    )


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {"RayCluster", "RayService", "Deployment", "ConfigMap", "Secret"} <= kinds
    assert all(
        doc["metadata"].get("namespace") == "regimes"
        for _, doc in MANIFESTS
        if doc["kind"] != "Namespace"
    )


@pytest.mark.parametrize(
    ("name", "doc"),
    [item for item in MANIFESTS if item[1]["kind"] not in KUBERAY_KINDS],
    ids=_ids([item for item in MANIFESTS if item[1]["kind"] not in KUBERAY_KINDS]),
)
def test_built_in_kinds_are_valid_kubernetes(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validation_refuses_a_broken_manifest():
    deployment = next(doc for _, doc in MANIFESTS if doc["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError, match="'one' is not of type"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["enviroment"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="enviroment"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("name", "doc"),
    [item for item in MANIFESTS if item[1]["kind"] in KUBERAY_KINDS],
    ids=_ids([item for item in MANIFESTS if item[1]["kind"] in KUBERAY_KINDS]),
)
def test_kuberay_kinds_run_this_ray_with_token_auth(name, doc):
    assert doc["apiVersion"] == "ray.io/v1"
    cluster = doc["spec"]["rayClusterConfig"] if doc["kind"] == "RayService" else doc["spec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"] == {"mode": "token", "secretName": "regimes-ray-token"}
    assert "rayStartParams" in cluster["headGroupSpec"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": group["template"],
        }
        kubernetes_validate.validate(template, KUBERNETES_VERSION, strict=True)


def test_the_rayservice_serves_infra_serve_yaml():
    service = next(doc for _, doc in MANIFESTS if doc["kind"] == "RayService")
    serve_yaml = yaml.safe_load((REPO_ROOT / "infra" / "serve.yaml").read_text())
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == serve_yaml
    schema = ServeDeploySchema.model_validate(serve_yaml)
    (application,) = schema.applications
    assert application.import_path == "regimes.serve.app:app_builder"
    # The builder accepts the args (shard counts, intervals) with the shipped config.
    args = copy.deepcopy(application.args)
    args["params"]["config_dir"] = str(REPO_ROOT / "config")
    assert type(app_builder(args)).__name__ == "Application"


def test_every_reference_is_defined():
    defined = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in MANIFESTS}
    secret_keys = {
        name: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for (kind, name), doc in defined.items()
        if kind == "Secret"
    }
    references = 0
    for _, doc in MANIFESTS:
        for pod in _pod_specs(doc):
            for container in pod["containers"]:
                for source in container.get("envFrom", []):
                    assert ("ConfigMap", source["configMapRef"]["name"]) in defined
                    references += 1
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in secret_keys[ref["name"]], (doc["kind"], env["name"])
                        references += 1
                mounts = {m["name"] for m in container.get("volumeMounts", [])}
                assert mounts <= {v["name"] for v in pod.get("volumes", [])} | {
                    t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])
                }
            for volume in pod.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", claim) in defined
                if "secret" in volume:
                    assert ("Secret", volume["secret"]["secretName"]) in defined
                if "configMap" in volume:
                    assert ("ConfigMap", volume["configMap"]["name"]) in defined
    for _, doc in MANIFESTS:
        if doc["kind"] in KUBERAY_KINDS:
            cluster = doc["spec"].get("rayClusterConfig", doc["spec"])
            assert ("Secret", cluster["authOptions"]["secretName"]) in defined
    assert references > 20


def _secret_env(container: dict) -> dict:
    """The container's variables that come from a Secret: name -> (secret, key)."""
    return {
        env["name"]: (ref["name"], ref["key"])
        for env in container.get("env", [])
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    }


def test_the_prefect_server_takes_an_auth_string_and_its_clients_send_one():
    containers = [
        container
        for _, doc in MANIFESTS
        for pod in _pod_specs(doc)
        for container in pod["containers"]
        # `prefect ...` itself, or a shell running it (the deploy Job: deploy, then the
        # recovery automations)
        if re.search(r"(^|\s)prefect\s", " ".join(map(str, container.get("command", []))))
    ]
    servers = [c for c in containers if c["command"][:3] == ["prefect", "server", "start"]]
    clients = [c for c in containers if c["command"][:3] != ["prefect", "server", "start"]]
    assert len(servers) == 1 and len(clients) >= 2  # the worker and the deploy Job
    server = servers[0]
    assert _secret_env(server)["PREFECT_SERVER_API_AUTH_STRING"] == (
        "regimes-credentials",
        "PREFECT_SERVER_API_AUTH_STRING",
    )
    # The one path such a server answers without the string.
    assert server["readinessProbe"]["httpGet"]["path"] == "/api/health"
    for client in clients:
        assert _secret_env(client)["PREFECT_API_AUTH_STRING"] == (
            "regimes-credentials",
            "PREFECT_API_AUTH_STRING",
        ), client["name"]
    # Left unreplaced, the two placeholders differ, so the server refuses the clients.
    credentials = next(
        doc["stringData"]
        for _, doc in MANIFESTS
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "regimes-credentials"
    )
    assert credentials["PREFECT_API_AUTH_STRING"] != credentials["PREFECT_SERVER_API_AUTH_STRING"]


def test_no_credential_is_committed():
    secrets = [doc for _, doc in MANIFESTS if doc["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value, f"{secret['metadata']['name']}.{key} holds a value"
    settings = _settings()
    for key, value in settings["data"].items():
        assert not re.search(r"(?i)(password|secret|token)=|://[^/@]*:[^/@]*@", value), key


def test_the_settings_name_variables_the_code_reads():
    settings = _settings()
    sources = "\n".join(
        p.read_text()
        for folder in ("platform", "jobs", "serve", "flows")
        for p in (REPO_ROOT / folder).rglob("*.py")
    )
    for key in settings["data"]:
        if key.startswith("REGIMES_"):
            assert f'"{key}"' in sources, f"{key}: no code reads it"


def test_the_image_matches_the_manifests():
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-cpu" in dockerfile
    for source in re.findall(r"^COPY (?:--chown=\S+ )?(.+?) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (REPO_ROOT / path).exists(), f"Dockerfile copies {path}, which is missing"
    images = {
        c["image"] for _, doc in MANIFESTS for pod in _pod_specs(doc) for c in pod["containers"]
    }
    assert "regimes:latest" in images
