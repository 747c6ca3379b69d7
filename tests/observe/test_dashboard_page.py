"""The built-in dashboard page in a real headless Chromium: it loads with no console error and
shows the figures the traffic produced.

Needs Debian's ``chromium`` package. Without it this test skips, except under CI (``CI`` set),
where it fails instead. The screenshot is kept as ``dashboard.png`` in the test's tmp folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.kit.serve import guardrail_serve, policy_copy
from tests.kit.servers import ThreadedServer
from tests.kit.upstreams import mock_upstream

from .observekit import drive_traffic

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TOKEN = "dashboard-page-token-1234"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium not installed (Debian package 'chromium'); CI must install it")
    pytest.skip("chromium not installed (Debian package 'chromium')")


def headless(browser: str, url: str, tmp_path: Path, *mode: str) -> tuple[str, str]:
    """Run headless Chromium on ``url``; returns (stdout, stderr with console messages)."""
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--window-size=1400,1500",
            "--virtual-time-budget=8000",
            *mode,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, element_id
    return match.group(1)


def test_dashboard_page_shows_the_traffic_without_console_errors(tmp_path: Path) -> None:
    browser = chromium()
    folder = policy_copy(tmp_path)
    env = {"GUARDRAIL_ADMIN_TOKEN": TOKEN, "GUARDRAIL_AUDIT_SINK": "off"}
    with (
        ThreadedServer(mock_upstream) as upstream,
        guardrail_serve(tmp_path, upstream.url, folder, env=env) as served,
    ):
        time.sleep(0.5)  # the admin sampler's first sample: the baseline of the windows
        drive_traffic(served.proxy, served.admin, folder, TOKEN)
        url = f"{served.admin}/dashboard#token={TOKEN}"
        dom, console = headless(browser, url, tmp_path, "--dump-dom")
        shot = tmp_path / "dashboard.png"
        _, console_shot = headless(browser, url, tmp_path, f"--screenshot={shot}")
        denied, _ = headless(browser, f"{served.admin}/dashboard", tmp_path, "--dump-dom")
        stats = httpx.get(f"{served.admin}/-/stats", headers={"authorization": f"Bearer {TOKEN}"})
    for log in (console, console_shot):
        assert "CONSOLE" not in log, [line for line in log.splitlines() if "CONSOLE" in line]
    assert 'data-loaded="true"' in dom
    assert text_of(dom, "t-crisis") == "3"
    assert text_of(dom, "t-blocked") == "3"
    assert text_of(dom, "t-rewritten") == "3"
    assert text_of(dom, "t-shadow") == "3"
    assert text_of(dom, "t-upstream-errors") == "3"
    assert text_of(dom, "t-reload-failures") == "1"
    assert text_of(dom, "loaded-count") == "4"
    assert re.fullmatch(r"[\d.]+ ms", text_of(dom, "t-overhead"))
    assert re.fullmatch(r"[\d.]+ ms", text_of(dom, "o-p50"))
    for policy in ("ops.crisis", "ops.dependency", "ops.agree_shadow", "ops.block"):
        assert f"<td>{policy}</td>" in dom
    assert ">referral<" in dom and ">shadow<" in dom
    assert "Window covers the last" in text_of(dom, "coverage")
    assert shot.stat().st_size > 10_000
    # without the token the page asks for it and shows no figures
    assert 'data-loaded="true"' not in denied and "needs its token" in denied
    assert stats.json()["totals"]["counts"]["crisis_resources"] == 3
