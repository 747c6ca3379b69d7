"""Helpers shared by the ops tests: fixture policies, metric reading, a scripted upstream on a
real uvicorn, and ``guardrail serve`` as a real process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from guardrail.observe.metrics import REGISTRY
from guardrail.observe.metrics import render as render_metrics

FIXTURES = Path(__file__).parent / "fixtures"
POLICIES = FIXTURES / "policies"
SENTINEL = "SENTINEL-OPS-5c1e77"
BROKEN_POLICY = f"""
policies:
  - id: ops.broken
    category: referral
    description: refers to a detector that does not exist
    severity: low
    condition: reply.nowhere
    tests:
      hit:
        - user: "{SENTINEL} pasted from a real conversation"
          reply: "{SENTINEL}"
"""
"""A policy file that fails to load at line 7 (policy 'ops.broken'); its test case text holds
the sentinel, as if pasted from a real conversation."""


def policy_copy(tmp_path: Path) -> Path:
    """A writable copy of the ops policy folder."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def value(name: str, **labels: str) -> float:
    """The current value of one sample of guardrail's registry (0.0 when absent)."""
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text -> {sample name: [(labels, value)]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def exposition() -> str:
    body, _ = render_metrics(None)
    return body.decode("utf-8")


class QuietServer(uvicorn.Server):
    """A uvicorn server for tests: it installs no signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


# --------------------------------------------------------------------------- a scripted upstream

MOCK_HEADER = "x-mock-upstream"


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-ops",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "ops-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
    }


def _sse(text: str) -> bytes:
    events = []
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else " " + word
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


async def mock_upstream(scope: Any, receive: Any, send: Any) -> None:
    """An OpenAI-like upstream driven by the last user message.

    ``reply: TEXT`` -> the assistant reply is TEXT; ``upstream-fail`` -> a 500 whose error body
    repeats the user's message; ``stream: true`` in the request -> the reply as SSE. Any other
    path answers 200 ``{"mock": path}``, marked with the ``x-mock-upstream`` header.
    """
    if scope["type"] != "http":
        return
    request = Request(scope, receive)
    body = await request.body()
    marker = {MOCK_HEADER: "1"}
    if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
        raw = scope.get("raw_path", b"").decode("latin-1")
        response: Response = JSONResponse({"mock": raw}, headers=marker)
        await response(scope, receive, send)
        return
    try:
        data = json.loads(body)
    except ValueError:  # a careless upstream that quotes what it could not parse
        error = {"error": {"message": f"bad JSON: {body.decode(errors='replace')}"}}
        await JSONResponse(error, status_code=400, headers=marker)(scope, receive, send)
        return
    last = next((m["content"] for m in reversed(data["messages"]) if m["role"] == "user"), "")
    if "upstream-fail" in last:
        error = {"error": {"message": f"cannot serve: {last}", "type": "server_error"}}
        response = JSONResponse(error, status_code=500, headers=marker)
    else:
        text = last.split("reply:", 1)[1].strip() if "reply:" in last else "Thanks for sharing."
        if data.get("stream"):
            response = Response(_sse(text), media_type="text/event-stream", headers=marker)
        else:
            response = JSONResponse(_completion(text), headers=marker)
    await response(scope, receive, send)


class ThreadedServer:
    """A real uvicorn server on a free loopback port, in a thread of its own (for sync tests)."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False
        )
        self.server = QuietServer(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise AssertionError("mock upstream did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


# --------------------------------------------------------------------------- guardrail serve


@dataclass
class Served:
    """A ``guardrail serve`` process: its URLs and everything it wrote."""

    proc: subprocess.Popen[bytes]
    proxy: str
    admin: str
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
        return found

    def audit(self) -> list[dict[str, Any]]:
        lines = self.stdout.read_text(errors="replace").splitlines()
        return [json.loads(x) for x in lines if x.startswith('{"schema":"guardrail.audit/1"')]


@contextlib.contextmanager
def guardrail_serve(
    tmp_path: Path, upstream: str, policies: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """Run ``guardrail serve`` on free loopback ports (proxy and admin) until the block ends."""
    out, err = tmp_path / "serve.stdout", tmp_path / "serve.stderr"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    command = [
        sys.executable,
        "-m",
        "guardrail",
        "serve",
        "--upstream",
        upstream,
        "--port",
        "0",
        "--admin-port",
        "0",
        "--policies",
        str(policies),
        "--log-format",
        "json",
        *args,
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env={**clean, **(env or {})})
    try:
        deadline = time.monotonic() + 30
        served = Served(proc, "", "", out, err)
        while not served.events("serving"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"guardrail serve did not start: {served.output()}")
            time.sleep(0.05)
        line = served.events("serving")[0]
        served.proxy, served.admin = f"http://{line['listen']}", f"http://{line['admin']}"
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "ops-model", "messages": [{"role": "user", "content": text}], **extra}


def drive_traffic(proxy: str, admin: str, folder: Path, token: str) -> None:
    """Every kind of event the dashboards show, three times over: a crisis prepend and a sentence
    removal, a shadow hit, a block, an unchanged reply, an upstream 500, a client error (a body
    the upstream cannot parse: 400), a stream, a models list; then one refused and one good
    reload through the admin endpoint."""
    with httpx.Client(base_url=proxy, timeout=10) as client:
        for _ in range(3):
            for body in (
                chat("I want to end it all. reply: I will always be here for you. Take care."),
                chat("reply: You are absolutely right."),
                chat("reply: Here is a forbidden marker."),
                chat("reply: Thanks for telling me."),
                chat("upstream-fail now"),
                chat("reply: Streams pass through.", stream=True),
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
