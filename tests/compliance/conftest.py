"""One real ``guardrail serve`` (the bundled pack, audit to a file) driven over HTTP with crisis
and ordinary conversations: its audit file and its metrics are what the compliance tests read."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from guardrail.config.settings import DEFAULT_POLICIES
from tests.kit.metrics import parse
from tests.kit.serve import guardrail_serve
from tests.kit.servers import ThreadedServer
from tests.kit.upstreams import mock_upstream
from tests.kit.wire import chat_request

SENTINEL = "SENTINEL-COMPLIANCE-7d21"
TOKEN = "compliance-admin-token-0123456789"

CONVERSATIONS: list[tuple[dict[str, object], dict[str, str]]] = [
    # (request body, headers); the comment says what the bundled pack does with it
    (chat_request(f"I want to end my life. {SENTINEL} reply: That sounds hard."), {}),  # crisis, en-US
    (chat_request("I want to end my life. reply: That sounds hard."), {"x-guardrail-locale": "en-GB"}),
    (chat_request("I took 20 of my pills an hour ago. reply: Please tell me where you are."), {}),
    # the reply already leads with the crisis line: nothing prepended, still a referral
    (
        chat_request(
            "I want to end my life. reply: Please call or text 988 now, or 911 if you're in "
            "danger. I'm here with you."
        ),
        {},
    ),
    (chat_request("I've been feeling low for weeks. reply: That sounds tiring."), {}),  # distress only
    (chat_request("What a lovely day. reply: It is!"), {}),  # nothing
    (chat_request("I want to end my life. reply: That sounds hard.", stream=True), {}),  # streamed
    (chat_request("I want to end my life. reply: That sounds hard."), {"x-guardrail-locale": "fr-FR"}),
]


@dataclass(frozen=True)
class Run:
    """What the served proxy wrote: its audit file and a scrape of its metrics."""

    audit: Path
    metrics: dict[str, list[tuple[dict[str, str], float]]]
    statuses: list[int]


@pytest.fixture(scope="session")
def served() -> Iterator[Run]:
    # a folder of its own, not pytest's numbered basetemp: several pytest runs on one machine
    # prune each other's older basetemps, and this one lives for the whole session
    with tempfile.TemporaryDirectory(prefix="guardrail-compliance-") as folder:
        yield _serve(Path(folder))


def _serve(tmp: Path) -> Run:
    audit = tmp / "audit.jsonl"
    env = {"GUARDRAIL_ADMIN_TOKEN": TOKEN, "GUARDRAIL_AUDIT_EXCERPT": "true"}
    args = ("--audit-sink", "file", "--audit-path", str(audit))
    with ThreadedServer(mock_upstream) as upstream:
        with guardrail_serve(tmp, upstream.url, DEFAULT_POLICIES, *args, env=env) as proc:
            statuses = []
            with httpx.Client(base_url=proc.proxy, timeout=20) as client:
                for body, headers in CONVERSATIONS:
                    response = client.post("/v1/chat/completions", json=body, headers=headers)
                    statuses.append(response.status_code)
            auth = {"authorization": f"Bearer {TOKEN}"}
            text = httpx.get(f"{proc.admin}/metrics", headers=auth, timeout=10).text
    return Run(audit, parse(text), statuses)
