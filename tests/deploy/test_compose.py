"""deploy/compose.yaml: parses, and every file it mounts exists and is the one that ships.

No Docker engine here: the file is checked, not run. What a replica runs is run for real in
tests/deploy/test_container_command.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .deploykit import COMPOSE, CONFIG_PATH, DEPLOY, DOCKERFILE, ROOT, container_settings
from .test_dockerfile import final_stage, one

REPLICAS = ("guardrail-a", "guardrail-b")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def replica_env(shell: Mapping[str, str] | None = None) -> dict[str, str]:
    """A replica's environment as compose resolves it from ``shell`` (default: an empty one):
    ``${VAR:-default}`` substituted, a key without a value passed on only when set there."""
    shell = shell or {}
    resolved = {}
    for name, value in compose()["services"]["guardrail-a"]["environment"].items():
        if value is None:
            if name in shell:
                resolved[name] = shell[name]
            continue
        resolved[name] = re.sub(
            r"\$\{(\w+):-([^}]*)\}", lambda m: shell.get(m.group(1)) or m.group(2), str(value)
        )
    return resolved


def mounts(service: str) -> dict[str, Path]:
    """Container path -> host file of each bind mount (relative to deploy/, compose's folder)."""
    found = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (COMPOSE.parent / source).resolve()
    return found


def test_two_guardrail_replicas_built_from_the_dockerfile() -> None:
    services = compose()["services"]
    assert set(REPLICAS) <= set(services)
    for name in REPLICAS:
        service = services[name]
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
        assert service["command"] == json.loads(one(final_stage(), "CMD"))
        assert service["read_only"] is True
        assert service["user"] == one(final_stage(), "USER")
        assert mounts(name)[CONFIG_PATH] == DEPLOY / "docker" / "guardrail.yaml"


def test_replicas_publish_the_real_ports_on_loopback_only() -> None:
    settings = container_settings(replica_env())
    published = set()
    for name in REPLICAS:
        container_ports = set()
        for spec in compose()["services"][name]["ports"]:
            address, host_port, container_port = spec.split(":")
            assert address == "127.0.0.1"
            published.add(int(host_port))
            container_ports.add(int(container_port))
        assert container_ports == {settings.port, settings.admin_port}
    assert len(published) == 2 * len(REPLICAS)  # no two replicas on one host port


def test_replicas_run_the_demo_unless_told_otherwise() -> None:
    assert replica_env() == {"GUARDRAIL_DEMO": "true"}
    assert container_settings(replica_env()).demo
    upstream = {"GUARDRAIL_DEMO": "false", "GUARDRAIL_UPSTREAM": "https://api.openai.com"}
    real = container_settings(replica_env(upstream))
    assert not real.demo and real.upstream == "https://api.openai.com"
    secrets = {"GUARDRAIL_ADMIN_TOKEN": "t" * 24, "GUARDRAIL_AUDIT_KEY": "k" * 24}
    assert container_settings(replica_env(secrets)).admin_token == "t" * 24


def test_prometheus_loads_the_shipped_rules_and_scrapes_both_replicas() -> None:
    files = mounts("prometheus")
    assert files["/etc/prometheus/rules.yml"] == DEPLOY / "prometheus" / "rules.yml"
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"].read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "guardrail"  # what GuardrailDown matches
    admin_port = container_settings().admin_port
    assert job["static_configs"][0]["targets"] == [f"{name}:{admin_port}" for name in REPLICAS]
    assert job["metrics_path"] == "/metrics"


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    files = mounts("grafana")
    for target, source in files.items():
        assert source.is_file(), f"{source} (mounted at {target}) does not exist"
    dashboard = files["/var/lib/grafana/dashboards/guardrail.json"]
    assert dashboard == DEPLOY / "grafana" / "dashboard.json"
    providers = [
        yaml.safe_load(p.read_text()) for t, p in files.items() if "/provisioning/dashboards/" in t
    ]
    folder = str(Path("/var/lib/grafana/dashboards/guardrail.json").parent)
    assert providers[0]["providers"][0]["options"]["path"] == folder
    sources = [
        yaml.safe_load(p.read_text()) for t, p in files.items() if "/provisioning/datasources/" in t
    ]
    (source,) = sources[0]["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"


def test_every_bind_mount_exists() -> None:
    for name in compose()["services"]:
        for target, source in mounts(name).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"
