"""deploy/kubernetes: every manifest is valid, and agrees with what `guardrail serve` exposes.

Built-in kinds are validated against the Kubernetes OpenAPI schemas kubernetes-validate ships
(offline, strict: an unknown field is an error); the Prometheus Operator's ServiceMonitor and
PrometheusRule against the schemas in tests/deploy/schemas/. No cluster is involved.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from guardrail.errors import ConfigError
from guardrail.policy import load_policies
from guardrail.config.settings import Settings

from .deploykit import (
    CONFIG_PATH,
    DEPLOY,
    KUBERNETES,
    manifest,
    manifests,
    probe_status,
    settings_from_text,
)
from .test_dockerfile import final_stage, one

pytestmark = pytest.mark.slow  # every rendered manifest validated against its schema

VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes release still in common support here, and the newest the package knows."""
SCHEMAS = Path(__file__).with_name("schemas")
CRDS = {"ServiceMonitor": "servicemonitor.json", "PrometheusRule": "prometheusrule.json"}
CONFIGMAP_LIMIT = 1024 * 1024  # bytes of data one ConfigMap may hold


def validate(document: dict[str, Any], version: str) -> None:
    if document["kind"] in CRDS:
        schema = json.loads((SCHEMAS / CRDS[document["kind"]]).read_text(encoding="utf-8"))
        jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    else:
        kubernetes_validate.validate(document, version, strict=True)


def names() -> list[str]:
    return [f"{path.name}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in manifests()]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("index", range(len(manifests())), ids=names())
def test_manifest_validates(index: int, version: str) -> None:
    _, document = manifests()[index]
    validate(document, version)


def test_every_kind_the_issue_asks_for_is_there() -> None:
    kinds = {doc["kind"] for _, doc in manifests()}
    assert kinds == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    }
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml"
    )


@pytest.mark.parametrize(
    ("kind", "name", "breakage"),
    [
        (
            "Deployment",
            "guardrail",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
        ),
        ("Service", "guardrail", lambda d: d["spec"]["ports"][0].update(port="http")),
        (
            "ServiceMonitor",
            "guardrail",
            lambda d: d["spec"]["endpoints"][0].update(intervall="15s"),
        ),
        (
            "PrometheusRule",
            "guardrail",
            lambda d: d["spec"]["groups"][1]["rules"][0].update(record="x"),
        ),
    ],
    ids=[
        "deployment-typo",
        "service-port-name",
        "servicemonitor-typo",
        "rule-both-alert-and-record",
    ],
)
def test_validation_rejects_a_broken_manifest(kind: str, name: str, breakage: Any) -> None:
    """The validators really judge: one typo in each kind of manifest is refused."""
    broken = copy.deepcopy(manifest(kind, name))
    breakage(broken)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(broken, VERSIONS[-1])


def test_prometheus_rule_is_the_shipped_rules_file() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text(encoding="utf-8"))
    assert manifest("PrometheusRule", "guardrail")["spec"]["groups"] == rules["groups"]


@pytest.mark.subprocess
def test_generated_manifests_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(KUBERNETES / "generate.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_policies_config_map_loads_as_the_default_pack(tmp_path: Path) -> None:
    data = manifest("ConfigMap", "guardrail-policies")["data"]
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    assert size < CONFIGMAP_LIMIT, size
    for name, text in data.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    mounted, bundled = load_policies(tmp_path), load_policies(Settings().policies)
    assert [p.id for p in mounted.policies] == [p.id for p in bundled.policies]
    assert mounted.digest == bundled.digest


def cluster_settings(tmp_path: Path, env: dict[str, str] | None = None) -> Settings:
    text = manifest("ConfigMap", "guardrail-config")["data"]["guardrail.yaml"]
    return settings_from_text(text, tmp_path, env)


def container() -> dict[str, Any]:
    spec = manifest("Deployment", "guardrail")["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    return dict(spec["containers"][0])


def test_container_ports_are_the_configured_listeners(tmp_path: Path) -> None:
    settings = cluster_settings(tmp_path)
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports == {"http": settings.port, "admin": settings.admin_port}
    assert settings.host == "0.0.0.0" and settings.admin_host == "0.0.0.0"  # kubelet reaches it


@pytest.mark.slow
def test_probes_hit_guardrails_liveness_and_readiness(tmp_path: Path) -> None:
    box = container()
    live, ready, start = (
        box[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")
    )
    assert live["port"] == ready["port"] == start["port"] == "admin"
    statuses = probe_status(live["path"], ready["path"], start["path"])
    assert statuses.ready[live["path"]] == 200 and statuses.starting[live["path"]] == 200
    assert statuses.ready[ready["path"]] == 200 and statuses.starting[ready["path"]] == 503
    assert statuses.starting[start["path"]] == 200  # a starting pod is alive, not killed


@pytest.mark.slow
def test_command_and_mounts_match_the_image(tmp_path: Path) -> None:
    box = container()
    stage = final_stage()
    assert "command" not in box  # the image's ENTRYPOINT
    assert box["args"] == json.loads(one(stage, "CMD"))
    mounts = {m["name"]: m for m in box["volumeMounts"]}
    assert mounts["config"]["mountPath"] == CONFIG_PATH
    assert mounts["config"]["subPath"] in manifest("ConfigMap", "guardrail-config")["data"]
    settings = cluster_settings(tmp_path)
    assert Path(mounts["policies"]["mountPath"]) == settings.policies
    assert settings.watch_policies  # an edit of the ConfigMap reaches the pods
    volumes = manifest("Deployment", "guardrail")["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v["configMap"]["name"] for v in volumes} == {
        "config": "guardrail-config",
        "policies": "guardrail-policies",
    }


def test_pod_runs_non_root_on_a_read_only_root(tmp_path: Path) -> None:
    pod = manifest("Deployment", "guardrail")["spec"]["template"]["spec"]
    box = container()
    uid = int(one(final_stage(), "USER").split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(box["resources"]["requests"])
    assert "memory" in box["resources"]["limits"]
    assert cluster_settings(tmp_path).audit.sink == "stdout"  # nothing written to the root fs


@pytest.mark.slow
def test_services_select_the_pods_and_name_their_ports(tmp_path: Path) -> None:
    settings = cluster_settings(tmp_path)
    pod_labels = manifest("Deployment", "guardrail")["spec"]["template"]["metadata"]["labels"]
    expected = {
        "guardrail": ("http", settings.port),
        "guardrail-admin": ("admin", settings.admin_port),
    }
    for name, (port_name, number) in expected.items():
        service = manifest("Service", name)["spec"]
        assert service["selector"].items() <= pod_labels.items()
        assert [(p["name"], p["targetPort"], p["port"]) for p in service["ports"]] == [
            (port_name, port_name, number)
        ]


def test_hpa_and_pdb_cover_the_deployment() -> None:
    deployment = manifest("Deployment", "guardrail")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    target = manifest("HorizontalPodAutoscaler", "guardrail")["spec"]
    assert target["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "guardrail",
    }
    assert target["minReplicas"] >= 2  # the PDB can then let one go
    pdb = manifest("PodDisruptionBudget", "guardrail")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["minAvailable"] < target["minReplicas"]


@pytest.mark.slow
def test_service_monitor_scrapes_the_admin_service_as_job_guardrail() -> None:
    monitor = manifest("ServiceMonitor", "guardrail")["spec"]
    admin = manifest("Service", "guardrail-admin")
    assert monitor["selector"]["matchLabels"].items() <= admin["metadata"]["labels"].items()
    assert (
        manifest("Service", "guardrail")["metadata"]["labels"]["app.kubernetes.io/component"]
        != (monitor["selector"]["matchLabels"]["app.kubernetes.io/component"])
    )  # the proxy Service is not scraped twice
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in admin["spec"]["ports"]}
    assert probe_status(endpoint["path"]).ready[endpoint["path"]] == 200
    job = admin["metadata"]["labels"][monitor["jobLabel"]]
    down = [
        r
        for g in manifest("PrometheusRule", "guardrail")["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "GuardrailDown"
    ]
    assert f'job="{job}"' in down[0]["expr"]
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["key"] in manifest("Secret", credentials["name"])["stringData"]


def test_secret_feeds_the_settings_and_its_placeholders_are_refused(tmp_path: Path) -> None:
    """A Secret applied unedited must not run with a token written in this repository."""
    secret = manifest("Secret", "guardrail-secrets")["stringData"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container()["env"]}
    assert set(env) == {"GUARDRAIL_ADMIN_TOKEN", "GUARDRAIL_AUDIT_KEY"}
    for variable, ref in env.items():
        assert ref["name"] == "guardrail-secrets" and ref["key"] in secret
        with pytest.raises(ConfigError, match=variable):
            cluster_settings(tmp_path, {variable: secret[ref["key"]]})
    good = {"GUARDRAIL_ADMIN_TOKEN": "a" * 32, "GUARDRAIL_AUDIT_KEY": "b" * 32}
    settings = cluster_settings(tmp_path, good)
    assert settings.admin_token == "a" * 32 and settings.audit.key == b"b" * 32
