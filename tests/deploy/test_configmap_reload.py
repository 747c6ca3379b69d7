"""An edit of the policies ConfigMap reaches a running pod (no kubelet here: its layout is built).

The kubelet writes a ConfigMap volume as a timestamped folder, a ``..data`` symlink to it, and
one symlink per key through ``..data``; an update writes a new folder and swaps ``..data`` in one
rename. guardrail, with the cluster config's ``watch_policies``, must see that swap and reload.
"""

from __future__ import annotations

import pytest
import os
import time
from pathlib import Path

import httpx

from guardrail.config.loading import load_settings

from .deploykit import manifest
from .test_container_command import serve

pytestmark = pytest.mark.slow


def write_version(volume: Path, name: str, data: dict[str, str]) -> None:
    """One kubelet update: a new folder, then ``..data`` swapped to it atomically."""
    folder = volume / name
    folder.mkdir()
    for key, text in data.items():
        (folder / key).write_text(text, encoding="utf-8")
    (volume / "..data_tmp").symlink_to(name)
    os.replace(volume / "..data_tmp", volume / "..data")
    for key in data:
        if not (volume / key).is_symlink():
            (volume / key).symlink_to(Path("..data") / key)


def reloads(admin: str) -> float:
    text = httpx.get(admin + "/metrics", timeout=5).text
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        wanted = ("guardrail_policy_reloads_total{", 'trigger="watch"', 'result="success"')
        if name.startswith(wanted[0]) and wanted[1] in name and wanted[2] in name:
            return float(value)
    return 0.0


def test_a_config_map_update_reloads_the_policies(tmp_path: Path) -> None:
    config = manifest("ConfigMap", "guardrail-config")["data"]["guardrail.yaml"]
    (tmp_path / "guardrail.yaml").write_text(config, encoding="utf-8")
    cluster = load_settings(config=tmp_path / "guardrail.yaml", env={})
    data = manifest("ConfigMap", "guardrail-policies")["data"]
    volume = tmp_path / "policies"
    volume.mkdir()
    write_version(volume, "..2026_01_01_00_00_00.1", data)
    env = {
        "GUARDRAIL_POLICIES": str(volume),
        "GUARDRAIL_WATCH_POLICIES": str(cluster.watch_policies).lower(),
        "GUARDRAIL_WATCH_INTERVAL": "0.2",
    }
    with serve(tmp_path, extra_env=env) as running:
        admin = f"http://127.0.0.1:{running.admin_port}"
        digest = httpx.get(admin + "/-/stats", timeout=5).json()["policy_digest"]
        time.sleep(0.5)
        edited = dict(data)
        first = min(edited)
        edited[first] += "\n# edited with kubectl edit configmap guardrail-policies\n"
        write_version(volume, "..2026_01_01_00_01_00.2", edited)
        deadline = time.monotonic() + 20
        while reloads(admin) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reloads(admin) >= 1, running.log.read_text()[-2000:]
        assert httpx.get(admin + "/-/stats", timeout=5).json()["policy_digest"] != digest
