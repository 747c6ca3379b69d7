"""Smoke tests of the benchmark tooling: the mock speaks the wire formats guardrail parses, the
pack duplication loads, and ``bench.run`` works end to end in its shortest mode.

No timing is asserted anywhere: the targets live in bench/ and bench/README.md, never in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.engine_bench import duplicate_pack
from bench.procs import REPO, Proc, free_port, start
from bench.texts import REPLIES, chat_body, messages_body, pad_reply
from bench.wire import split_text
from bench.wrkdriver import available
from guardrail.formats import anthropic_messages, openai_chat
from guardrail.formats.sse import SSEDecoder
from guardrail.policy import load_policies


@pytest.fixture(scope="module")
def mock() -> Iterator[Proc]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.mock_upstream", "--port", str(port), "--reply-bytes", "400"]
    proc = start("mock", cmd, port, cpu=None)
    yield proc
    proc.stop()


def _sse_texts(raw: bytes, api: str) -> list[str]:
    texts: list[str] = []
    for event in SSEDecoder().feed(raw):
        if event.data is None or event.data == "[DONE]":
            continue
        data = json.loads(event.data)
        if api == "openai":
            texts += [c["delta"].get("content") or "" for c in data["choices"]]
        elif data["type"] == "content_block_delta":
            texts.append(data["delta"]["text"])
    return [t for t in texts if t]


def test_split_text_keeps_the_text() -> None:
    text = pad_reply(REPLIES[0].text, 1000)
    parts = split_text(text, 32)
    assert "".join(parts) == text
    assert len(parts) == 32


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("api", "path", "build", "fmt"),
    [
        ("openai", "/v1/chat/completions", chat_body, openai_chat),
        ("anthropic", "/v1/messages", messages_body, anthropic_messages),
    ],
)
def test_mock_whole_and_streamed_replies_parse(
    mock: Proc, api: str, path: str, build: object, fmt: object
) -> None:
    assert callable(build)
    with httpx.Client(base_url=mock.url, timeout=10) as client:
        whole = client.post(path, json=build("hello", stream=False))
        streamed = client.post(
            path, json=build("hello", stream=True), headers={"x-mock-pace": "1,0"}
        )
    assert whole.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    (text,) = fmt.reply_texts(whole.json())  # type: ignore[attr-defined]
    assert text is not None and len(text) >= 400
    pieces = _sse_texts(streamed.content, api)
    assert len(pieces) == 32
    # the same connection's next reply is the next script entry, so compare with the script
    assert "".join(pieces).startswith(REPLIES[1].text)


@pytest.mark.subprocess
def test_mock_echoes_the_request_head(mock: Proc) -> None:
    r = httpx.post(mock.url + "/echo/a%41b", content=b"{}", headers={"x-probe": "1"}, timeout=10)
    assert r.text.startswith("POST /echo/a%41b HTTP/1.1")
    assert "x-probe: 1" in r.text


@pytest.mark.slow
def test_duplicated_pack_loads_with_every_policy_copied(tmp_path: Path) -> None:
    single = load_policies(REPO / "policies")
    doubled = load_policies(duplicate_pack(REPO / "policies", 2, tmp_path))
    assert len(doubled.policies) == 2 * len(single.policies)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not available(), reason="wrk is not installed (apt-get install -y wrk)")
def test_runner_end_to_end_in_its_shortest_mode(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    cmd = [
        sys.executable, "-m", "bench.run", "--runs", "1", "--seconds", "1", "--warmup", "0",
        "--clients", "1", "--ttft-streams", "1", "--pace", "2,0.2", "--ttft-targets", "", "--reply-bytes", "300",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    cells = {(c["target"], c["mode"]): c for c in result["cells"]}
    targets = ("direct", "bare", "guardrail")
    assert set(cells) == {(t, m) for t in targets for m in ("whole", "stream")}
    assert all(c["errors"] == 0 for c in cells.values())
    assert result["inspection"]["guardrail whole"].startswith("200 x-guardrail-inspected=true")
    assert "### non-streamed" in done.stdout and "| 1 | guardrail |" in done.stdout
    # guardrail against the bare pass-through (issue 12): one client only, so the latency ratio
    assert set(result["against_bare"]) == {"whole (guardrail)", "stream (guardrail)"}
    assert "added_ratio_1" in result["against_bare"]["whole (guardrail)"]
    assert "against the bare pass-through" in done.stdout
