"""The built-in dashboard page in a real headless Chromium, after real traffic through a real
``guardrail serve``: it loads with no console error, shows the figures the traffic produced
(client errors apart from upstream errors, as the alert rules count them), draws the hits over
time, keeps zeros grey, and fits an 800 px wide window.

Needs Debian's ``chromium`` package. Without it this test skips, except under CI (``CI`` set),
where it fails instead. The screenshot is kept as ``dashboard.png`` in the test's tmp folder.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from .browser import DevTools, chromium, headless, png_colours
from tests.kit.serve import guardrail_serve, policy_copy
from tests.kit.servers import ThreadedServer
from tests.kit.upstreams import mock_upstream

from .observekit import drive_traffic

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TOKEN = "dashboard-page-token-1234"
WIDTH = 800
LONG_ID = "ops.a_policy_whose_identifier_runs_on_and_on_because_its_team_put_the_whole_story_in_it"
LONG_POLICY = f"""
policies:
  - id: {LONG_ID}
    category: a_category_with_a_name_just_as_long_as_any_team_could_want_it_to_be
    description: a shadow twin of ops.block with names long enough to push a table wide
    severity: low
    mode: shadow
    condition: reply.forbidden
    actions:
      - append: {{text: "Noted."}}
"""


def text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, element_id
    return match.group(1)


def class_of(dom: str, element_id: str) -> str:
    match = re.search(rf'<[^>]*\bid="{element_id}"[^>]*>', dom)
    assert match, element_id
    found = re.search(r'class="([^"]*)"', match.group(0))
    return found.group(1) if found else ""


def polylines(svg: str) -> list[list[tuple[float, float]]]:
    """The points of every polyline in an SVG fragment."""
    lines = []
    for points in re.findall(r'<polyline[^>]*\bpoints="([^"]*)"', svg):
        pairs = [p.split(",") for p in points.split()]
        lines.append([(float(x), float(y)) for x, y in pairs])
    return lines


def test_dashboard_page_shows_the_traffic_without_console_errors(tmp_path: Path) -> None:
    browser = chromium()
    folder = policy_copy(tmp_path)
    (folder / "long.yaml").write_text(LONG_POLICY)
    env = {"GUARDRAIL_ADMIN_TOKEN": TOKEN, "GUARDRAIL_AUDIT_SINK": "off"}
    with (
        ThreadedServer(mock_upstream) as upstream,
        guardrail_serve(tmp_path, upstream.url, folder, env=env) as served,
    ):
        time.sleep(0.5)  # the admin sampler's first sample: the baseline of the windows
        url = f"{served.admin}/dashboard#token={TOKEN}"
        fresh, _ = headless(browser, url, tmp_path, "--dump-dom", width=WIDTH)
        drive_traffic(served.proxy, served.admin, folder, TOKEN)
        dom, console = headless(browser, url, tmp_path, "--dump-dom", width=WIDTH)
        shot = tmp_path / "dashboard.png"
        _, console_shot = headless(browser, url, tmp_path, f"--screenshot={shot}", width=WIDTH)
        denied, _ = headless(browser, f"{served.admin}/dashboard", tmp_path, "--dump-dom")
        with DevTools(browser, url, tmp_path / "devtools-profile", WIDTH, 900) as page:
            page.wait_for("!!document.body && document.body.getAttribute('data-loaded') === 'true'")
            width, viewport = page.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]"
            )
        stats = httpx.get(f"{served.admin}/-/stats", headers={"authorization": f"Bearer {TOKEN}"})
    for log in (console, console_shot):
        assert "CONSOLE" not in log, [line for line in log.splitlines() if "CONSOLE" in line]
    assert 'data-loaded="true"' in dom
    assert text_of(dom, "t-crisis_resources") == "3"
    assert text_of(dom, "t-blocked") == "3"
    assert text_of(dom, "t-rewritten") == "3"
    assert text_of(dom, "t-shadow_hits") == "6"
    assert text_of(dom, "t-reload_failures") == "1"
    assert text_of(dom, "loaded-count") == "5"
    assert re.fullmatch(r"[\d.]+ ms", text_of(dom, "t-overhead_p99"))
    assert re.fullmatch(r"[\d.]+ ms", text_of(dom, "o-p50"))
    for policy in ("ops.crisis", "ops.dependency", "ops.agree_shadow", "ops.block", LONG_ID):
        assert f'<td class="name">{policy}</td>' in dom
    assert ">referral<" in dom and ">shadow<" in dom
    assert "Window covers the last" in text_of(dom, "coverage")

    # upstream errors (the 500s) and client errors (the 400s) apart, as rules.yml counts them
    assert text_of(dom, "t-upstream_errors") == "3"
    assert text_of(dom, "t-client_errors") == "3"  # drive_traffic's bodies the upstream refused
    assert class_of(dom, "tile-upstream_errors") == "tile bad"  # 3 of 24 upstream requests > 5 %
    assert "alert above 5 %" in text_of(dom, "n-upstream_errors")
    assert class_of(dom, "tile-client_errors") == "tile ok"
    # zeros are neutral, whatever the figure
    for name in ("engine_errors", "audit_failures", "not_inspected"):
        assert text_of(dom, f"t-{name}") == "0" and class_of(dom, f"tile-{name}") == "tile zero"
    categories = dom[dom.index('id="categories"') : dom.index('id="policies-hit"')]
    assert '<td class="n zero">0</td>' in categories  # validation has no enforce hit
    assert not re.search(r'<td class="n">0</td>', dom)

    # hits over time: a line per category hit, whose points add up to the hits
    chart = dom[dom.index('id="trend"') : dom.index("</svg>", dom.index('id="trend"'))]
    lines = polylines(chart)
    assert len(lines) == 5 and all(len(line) >= 1 for line in lines)
    start = dom.index('id="trend-legend"')
    legend = dom[start : dom.index("</ul>", start)]
    for category, hits in (("referral", 3), ("dependency", 3), ("validation", 3)):
        assert f"{category} {hits}<" in legend
    trend = stats.json()["trend"]
    assert sum(sum(v) for v in trend["categories"].values()) == 15
    assert sum(trend["policies"]["ops.block"]) == 3
    table = dom[dom.index('id="policies-hit"') : dom.index('id="overhead"')]
    assert len(polylines(table)) == 5  # one sparkline per policy with hits

    # readable at 800 px: nothing wider than the window, and the capture is not blank
    assert viewport == WIDTH and width <= WIDTH, (width, viewport)
    assert shot.stat().st_size > 10_000 and png_colours(shot) > 50
    # before any traffic every tile is a grey zero and the chart says so, drawing nothing
    assert 'data-loaded="true"' in fresh
    tiles = re.findall(r'<div class="([^"]*)" id="tile-', fresh)
    assert len(tiles) == 22 and set(tiles) == {"tile zero"}, tiles
    assert text_of(fresh, "trend-peak") == "no hits in this span" and not polylines(fresh)
    # without the token the page asks for it and shows no figures
    assert 'data-loaded="true"' not in denied and "needs its token" in denied
    assert stats.json()["totals"]["counts"]["crisis_resources"] == 3
