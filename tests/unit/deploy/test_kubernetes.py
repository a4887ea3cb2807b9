"""deploy/kubernetes/: every overlay renders with kustomize, and every object it renders is valid, strictly
(an unknown field is an error, as `kubectl apply --validate=strict` makes it): the RayService against
KubeRay's own CRD schema (tests/data/kuberay), the built-in kinds against the official Kubernetes client's
models. The Serve config is the one deploy.kuberay builds, and the pods' settings are settings tuneserve
knows. Nothing here needs a cluster; the guide (deploy/kubernetes/README.md) says what was never run."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from deploy.kuberay import ClusterConfigError, require_external_services, serve_config
from service.platform.settings import Settings

REPO = Path(__file__).resolve().parents[3]
KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/dev", "overlays/gpu"]
CRD = REPO / "tests" / "data" / "kuberay" / "ray.io_rayservices.yaml"

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed"
)


@cache
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / overlay)], capture_output=True, text=True, check=True
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def strict(schema: object) -> object:
    """The schema with `additionalProperties: false` wherever it lists properties and allows no others."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@cache
def rayservice_validator():
    import jsonschema

    crd = yaml.safe_load(CRD.read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))


def rayservice_errors(obj: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in rayservice_validator().iter_errors(obj)
    ]


def builtin_errors(value: object, type_name: str, path: str = "") -> list[str]:
    """What the Kubernetes client's model `type_name` (e.g. "V1Job") says is wrong with `value`: unknown
    fields, wrong types, missing required fields."""
    import kubernetes.client as k8s

    if type_name in ("str", "datetime", "date"):
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a string"]
    if type_name == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not an integer"]
    if type_name == "bool":
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    if type_name == "object":
        return []
    if m := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [e for i, v in enumerate(value) for e in builtin_errors(v, m[1], f"{path}/{i}")]
    if m := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        if not isinstance(value, dict):
            return [f"{path}: not a mapping"]
        return [e for k, v in value.items() for e in builtin_errors(v, m[1], f"{path}/{k}")]
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        return [f"{path}: not a {type_name} mapping"]
    attrs = {json_key: attr for attr, json_key in model.attribute_map.items()}
    errors = [f"{path}/{key}: unknown field of {type_name}" for key in value if key not in attrs]
    errors += [
        e
        for key, v in value.items()
        if key in attrs
        for e in builtin_errors(v, model.openapi_types[attrs[key]], f"{path}/{key}")
    ]
    if not errors:  # the model's constructor checks its required fields
        try:
            k8s.ApiClient()._ApiClient__deserialize(value, type_name)
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
    return errors


def errors_of(obj: dict) -> list[str]:
    if obj["apiVersion"] == "ray.io/v1":
        return rayservice_errors(obj)
    version = obj["apiVersion"].split("/")[-1].capitalize()
    return builtin_errors(obj, f"{version}{obj['kind']}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_every_overlay_is_valid(overlay: str) -> None:
    objects = render(overlay)
    assert {o["kind"] for o in objects} >= {"RayService", "ConfigMap", "PersistentVolumeClaim", "Job"}
    for obj in objects:
        assert errors_of(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_checks_catch_unknown_fields_wrong_types_and_missing_fields() -> None:
    by_kind = {o["kind"]: o for o in render("overlays/dev")}
    rayservice = copy.deepcopy(by_kind["RayService"])
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["envFrom"][0]["configMapReff"] = {"name": "x"}
    rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    del rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    found = "\n".join(rayservice_errors(rayservice))
    assert "configMapReff" in found and "'two' is not of type 'integer'" in found and "groupName" in found
    job = copy.deepcopy(by_kind["Job"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicyy"] = "Always"
    container["stdin"] = "yes"
    found = "\n".join(builtin_errors(job, "V1Job"))
    assert "imagePullPolicyy: unknown field of V1Container" in found and "'yes' is not a boolean" in found
    job = copy.deepcopy(by_kind["Job"])
    job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"].pop("claimName")
    assert "claim_name" in "\n".join(builtin_errors(job, "V1Job"))


def test_the_serve_config_is_the_one_deploy_kuberay_builds() -> None:
    for overlay in OVERLAYS:
        [rayservice] = [o for o in render(overlay) if o["kind"] == "RayService"]
        assert yaml.safe_load(rayservice["spec"]["serveConfigV2"]) == serve_config()


def test_pods_get_only_settings_tuneserve_knows_and_objects_that_exist() -> None:
    objects = render("overlays/dev")
    named = {(o["kind"], o["metadata"]["name"]) for o in objects}
    env: dict[str, str] = {}
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "tuneserve-settings":
            env |= obj["data"]
        if obj["kind"] == "Secret" and obj["metadata"]["name"] == "tuneserve-secrets":
            import base64

            env |= {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
    prefix = "TUNESERVE_"
    settings = Settings(**{k.removeprefix(prefix).lower(): v for k, v in env.items()})
    require_external_services(settings)  # the dev overlay has every external service
    assert settings.serving_cpu_threads == "auto" and str(settings.models_dir) == "/models"

    pods = [spec for obj in objects for spec in _pod_specs(obj)]
    assert len(pods) == 3  # head, workers, the models Job (MinIO and PostgreSQL aside)
    for pod in pods:
        # Kubernetes puts every Service's address in the env as <NAME>_SERVICE_HOST...; for Services named
        # tuneserve-* those are TUNESERVE_* names, which tuneserve refuses as unknown settings.
        assert pod["enableServiceLinks"] is False
        for container in pod["containers"]:
            for source in container["envFrom"]:
                kind, ref = (
                    ("ConfigMap", source["configMapRef"])
                    if "configMapRef" in source
                    else (
                        "Secret",
                        source["secretRef"],
                    )
                )
                assert (kind, ref["name"]) in named
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in named


def _pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayService":
        cluster = obj["spec"]["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        return [g["template"]["spec"] for g in groups]
    if obj["kind"] == "Job" and obj["metadata"]["name"].startswith("tuneserve"):
        return [obj["spec"]["template"]["spec"]]
    return []


def test_a_cluster_deployment_refuses_embedded_services_naming_each() -> None:
    with pytest.raises(ClusterConfigError) as err:
        require_external_services(Settings())
    for name in (
        "TUNESERVE_DATABASE_URL",
        "TUNESERVE_S3_ENDPOINT_URL",
        "TUNESERVE_S3_ACCESS_KEY_ID",
        "TUNESERVE_API_KEY",
        "TUNESERVE_RAY_DASHBOARD_URL",
    ):
        assert name in str(err.value)
