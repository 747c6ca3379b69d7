"""Traffic for the dashboards' tests (the built-in page and the Prometheus rules and queries)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.kit.serve import BROKEN_POLICY
from tests.kit.wire import chat_request


def drive_traffic(proxy: str, admin: str, folder: Path, token: str) -> None:
    """Every kind of event the dashboards show, three times over: a crisis prepend and a sentence
    removal, a shadow hit, a block, an unchanged reply, an upstream 500, a client error (a body
    the upstream cannot parse: 400), a stream, a models list; then one refused and one good
    reload through the admin endpoint."""
    with httpx.Client(base_url=proxy, timeout=10) as client:
        for _ in range(3):
            for body in (
                chat_request("I want to end it all. reply: I will always be here for you. Take care."),
                chat_request("reply: You are absolutely right."),
                chat_request("reply: Here is a forbidden marker."),
                chat_request("reply: Thanks for telling me."),
                chat_request("upstream-fail now"),
                chat_request("reply: Streams pass through.", stream=True),
            ):
                client.post("/v1/chat/completions", json=body)
            bad = client.post(
                "/v1/chat/completions",
                content=b'{"model": "ops-model", "messages": [',
                headers={"content-type": "application/json"},
            )
            assert bad.status_code == 400
            client.get("/v1/models")
            time.sleep(0.5)
    auth = {"authorization": f"Bearer {token}"}
    (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
    assert httpx.post(f"{admin}/-/reload", headers=auth).status_code == 422
    (folder / "zz_broken.yaml").unlink()
    assert httpx.post(f"{admin}/-/reload", headers=auth).status_code == 200
