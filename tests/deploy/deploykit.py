"""What deploy/ is checked against: the files, and what `guardrail serve` really exposes.

Ports come from the container's own config file loaded by guardrail.config.settings (the same code
`guardrail serve --config` runs), probe paths from the admin app guardrail.proxy.admin builds, so
nothing a manifest must agree with is written down twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from starlette.testclient import TestClient

from guardrail.proxy.admin import build_admin_app
from guardrail.proxy.pipeline import PolicyHolder
from guardrail.policy import load_policies
from guardrail.config.loading import load_settings
from guardrail.config.settings import Settings

from tests.kit.paths import ROOT


DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
CONTAINER_CONFIG = DEPLOY / "docker" / "guardrail.yaml"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
CONFIG_PATH = "/etc/guardrail/guardrail.yaml"
"""Where the image and the manifests put the config file (the CMD's --config)."""
POLICIES_PATH = "/etc/guardrail/policies"
DEMO_ENV = {"GUARDRAIL_DEMO": "true"}
"""The container config names no upstream: compose sets GUARDRAIL_DEMO, a cluster the file."""


def container_settings(env: Mapping[str, str] = DEMO_ENV) -> Settings:
    """The settings `guardrail serve --config` resolves from the image's config file."""
    return load_settings(config=CONTAINER_CONFIG, env=dict(env))


def settings_from_text(text: str, tmp: Path, env: Mapping[str, str] | None = None) -> Settings:
    path = tmp / "guardrail.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(config=path, env=dict(env or {}))


@dataclass(frozen=True)
class Probes:
    """Status of a path on guardrail's real admin app, ready and not ready."""

    ready: Mapping[str, int]
    starting: Mapping[str, int]


def probe_status(*paths: str) -> Probes:
    """GET each path on the admin app guardrail serve builds, once ready and once not."""
    holder = PolicyHolder(load_policies(Settings().policies))
    result: list[dict[str, int]] = []
    for ready in (True, False):
        app = build_admin_app(holder, None, ready=lambda ready=ready: ready)  # type: ignore[misc]
        with TestClient(app) as client:
            result.append({path: client.get(path).status_code for path in paths})
    return Probes(ready=result[0], starting=result[1])


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every object in deploy/kubernetes/*.yaml but the kustomization, with its file."""
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(document, dict), f"{path.name}: a document is not a mapping"
            found.append((path, document))
    return found


def manifest(kind: str, name: str) -> dict[str, Any]:
    hits = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]
