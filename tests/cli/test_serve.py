"""``guardrail serve``: refuses bad start-up input with exit 2; ``--demo`` works end to end."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from guardrail.cli import main

from tests.kit.paths import PROXY_FIXTURES
from tests.kit.serve import stop
from tests.kit.servers import free_port


def test_bad_policy_set_is_refused_with_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "serve",
            "--upstream",
            "https://x.test",
            "--policies",
            str(PROXY_FIXTURES / "bad"),
            "--port",
            str(free_port()),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(
        r"bad/policies\.yaml:10: policy 'validation\.broken': unknown detector", lines[0]
    )


def test_missing_policy_path_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status = main(["serve", "--upstream", "https://x.test", "--policies", str(tmp_path / "nope")])
    assert status == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--upstream", "ftp://x.test"],
            "flag --upstream: upstream: must be an http:// or https:// URL",
        ),
        (
            ["--upstream", "https://x.test", "--port", "http"],
            "flag --port: port: must be an integer",
        ),
        ([], "no upstream configured"),
    ],
)
def test_bad_settings_are_refused(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("GUARDRAIL_UPSTREAM", raising=False)
    status = main(["serve", "--policies", str(PROXY_FIXTURES / "policies"), *argv])
    assert status == 2
    assert message in capsys.readouterr().err


def test_busy_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        status = main(
            [
                "serve",
                "--upstream",
                "https://x.test",
                "--policies",
                str(PROXY_FIXTURES / "policies"),
                "--port",
                str(port),
            ]
        )
    assert status == 2
    assert f"port: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture
def demo_process() -> Iterator[tuple[str, list[str]]]:
    port, demo_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guardrail",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--demo-port",
            str(demo_port),
            "--policies",
            str(PROXY_FIXTURES / "policies"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 30
    try:
        while not any("Ctrl+C" in line for line in list(lines)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"demo did not become ready: {lines}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", list(lines)
    finally:
        stop(proc)


@pytest.mark.slow
@pytest.mark.subprocess
def test_demo_end_to_end(demo_process: tuple[str, list[str]]) -> None:
    url, banner = demo_process
    text = "".join(banner)
    assert f"curl -s {url}/v1/chat/completions" in text
    assert f'OpenAI(base_url="{url}/v1"' in text
    assert "DEMO" in text
    assert "`--port 9000` moves the proxy" in text  # how to change ports (issue 13)
    for line in ("Started server process", "Application startup complete."):
        assert text.count(line) == 1, line  # once, though three servers start (issue 13)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0, timeout=10)
    raw = client.chat.completions.with_raw_response.create(
        model="guardrail-demo",
        messages=[{"role": "user", "content": "You are the only one I can talk to."}],
    )
    result = raw.parse()
    guardrail = (result.model_extra or {})["guardrail"]
    assert guardrail["inspected"] is True
    assert "dependency.always" in [hit["policy"] for hit in guardrail["hits"]]
    assert "always be here" not in (result.choices[0].message.content or "")
    assert raw.headers["x-guardrail-inspected"] == "true"
    # streamed requests are guarded too, sentence by sentence
    stream = client.chat.completions.with_raw_response.create(
        model="guardrail-demo",
        messages=[{"role": "user", "content": "You are the only one I can talk to."}],
        stream=True,
    )
    assert stream.headers["x-guardrail-inspected"] == "true"
    assert stream.headers["x-guardrail-holdback"] == "sentence"
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == (result.choices[0].message.content or "")  # the same rewrite as buffered
    notes = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    assert "dependency.always" in [hit["policy"] for hit in notes[-1]["hits"]]
    assert [m.id for m in client.models.list()] == ["guardrail-demo"]


def test_listener_turns_nagle_off_on_accepted_connections() -> None:
    """Accepted connections get TCP_NODELAY, or each response body waits for a delayed ACK."""
    import asyncio

    from guardrail.cli.process import bind as _bind

    async def accepted_nodelay() -> int:
        sock = _bind("127.0.0.1", 0, "port")
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_client, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(seen, 5)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
