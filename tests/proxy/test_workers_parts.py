"""The parts of ``guardrail serve --workers N`` that can be driven without a process tree: the
``workers`` setting, the restart budget (an injected clock), the fan-out result, the audit file
shared by several writers, and the supervisor's own counters added to the workers' sums
(issue 13, item 3). ``test_workers.py`` runs the real thing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from guardrail.cli.fanout import FanOutResult
from guardrail.cli.supervisor import RestartBudget
from guardrail.config.loading import load_settings
from guardrail.errors import ConfigError
from guardrail.observe.audit import RotatingFile

UPSTREAM = {"upstream": "https://api.openai.com"}


def test_workers_default_to_one_process() -> None:
    assert load_settings(cli=UPSTREAM, env={}).workers == 1


def test_workers_from_file_environment_and_flag(tmp_path: Path) -> None:
    config = tmp_path / "guardrail.yaml"
    config.write_text("workers: 3\n")
    assert load_settings(cli=UPSTREAM, env={}, config=config).workers == 3
    env = {"GUARDRAIL_WORKERS": "4"}
    assert load_settings(cli=UPSTREAM, env=env, config=config).workers == 4
    assert load_settings(cli={**UPSTREAM, "workers": "2"}, env=env, config=config).workers == 2


@pytest.mark.parametrize(
    ("where", "raw", "message"),
    [
        ("env", "0", "environment GUARDRAIL_WORKERS: workers: must be an integer 1-64, got '0'"),
        ("env", "two", "environment GUARDRAIL_WORKERS: workers: must be an integer 1-64"),
        ("flag", "65", "flag --workers: workers: must be an integer 1-64, got '65'"),
        ("file", "-1", "guardrail.yaml:1: workers: must be an integer 1-64, got -1"),
    ],
)
def test_bad_workers_name_the_key_and_where_it_came_from(
    tmp_path: Path, where: str, raw: str, message: str
) -> None:
    config = tmp_path / "guardrail.yaml"
    config.write_text(f"workers: {raw}\n" if where == "file" else "{}\n")
    env = {"GUARDRAIL_WORKERS": raw} if where == "env" else {}
    cli = {**UPSTREAM, "workers": raw} if where == "flag" else UPSTREAM
    with pytest.raises(ConfigError) as caught:
        load_settings(cli=cli, env=env, config=config)
    assert message in str(caught.value)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restart_budget_allows_a_burst_then_refuses_until_the_window_passes() -> None:
    clock = Clock()
    budget = RestartBudget(limit=3, window=60.0, clock=clock)
    assert [budget.allow() for _ in range(3)] == [True, True, True]
    assert budget.allow() is False
    clock.now += 59.9
    assert budget.allow() is False  # the first three are still inside the window
    clock.now += 0.2
    assert budget.allow() is True  # they have left it
    assert budget.allow() is True
    assert budget.allow() is True
    assert budget.allow() is False


def test_fanned_out_refusal_reports_the_first_refusing_workers_error() -> None:
    error = {"file": "p.yaml", "line": 3, "policy_id": "x", "message": "unknown detector"}
    workers = (
        {"worker": 0, "pid": 10, "status": "ok", "digest": "new"},
        {"worker": 1, "pid": 11, "status": "refused", "digest": "old", "error": error},
    )
    body = FanOutResult(False, "admin", "old", 2, workers=workers).to_dict()
    assert body["status"] == "refused" and body["error"] == error
    assert body["workers"] == list(workers)
    gone = ({"worker": 0, "pid": None, "status": "not-running"},)
    assert FanOutResult(False, "admin", "d", 1, workers=gone).to_dict()["error"] == {
        "type": "worker-unreachable"
    }


def test_audit_rotation_by_one_writer_is_followed_not_repeated_by_another(tmp_path: Path) -> None:
    """Two writers of one audit path (two workers; here two open file descriptions): when one
    rotates, the other's next line goes to the new file, and it does not rotate a second time
    (which would push the fresh file into ``.1`` and the full one into ``.2``)."""
    path = tmp_path / "audit.jsonl"
    a = RotatingFile(path, max_bytes=40, backups=3)
    b = RotatingFile(path, max_bytes=40, backups=3)
    a.write("a1 " + "x" * 16 + "\n")  # 20 bytes
    b.write("b1 " + "x" * 16 + "\n")  # 40: full, counted from the file itself
    a.write("a2\n")  # A rotates: audit.jsonl -> .1
    b.write("b2\n")  # B finds the path renamed: follows it, no second rotation
    a.close()
    b.close()
    assert path.read_text() == "a2\nb2\n"
    assert path.with_name("audit.jsonl.1").read_text().splitlines() == [
        "a1 " + "x" * 16,
        "b1 " + "x" * 16,
    ]
    assert not path.with_name("audit.jsonl.2").exists()


@pytest.mark.subprocess
def test_audit_lines_from_several_processes_stay_whole(tmp_path: Path) -> None:
    """Four processes append 500 lines of about 20 KB each to one file at once: every line is
    whole (each is larger than PIPE_BUF and than Python's 8 KB write buffer: only one write
    call per line, appended by the kernel at the end, keeps them apart)."""
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from guardrail.observe.audit import RotatingFile
        f = RotatingFile(Path({str(path)!r}), max_bytes=1 << 40, backups=1)
        for i in range(500):
            f.write(json.dumps({{"writer": sys.argv[1], "i": i, "pad": "p" * 20000}}) + "\\n")
        f.close()
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(n)], env=os.environ)
        for n in range(4)
    ]
    assert [w.wait(120) for w in writers] == [0, 0, 0, 0]
    lines = path.read_text().splitlines()
    assert len(lines) == 2000
    seen = {(event["writer"], event["i"]) for event in map(json.loads, lines)}
    assert len(seen) == 2000


@pytest.mark.subprocess
def test_supervisor_counters_join_the_workers_sums(tmp_path: Path) -> None:
    """A process that imported guardrail before ``PROMETHEUS_MULTIPROC_DIR`` was set (the
    supervisor) has its own counters in memory: its scrape adds them to the workers' files,
    series by series, and a worker's counter it never touched is reported as the workers
    wrote it."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    worker = textwrap.dedent(
        """
        from guardrail.observe import metrics
        metrics.ADMIN_UNAUTHORIZED.inc(2)
        metrics.REFUSED.labels("client_busy").inc(5)
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    for _ in range(2):  # two workers, each its own pid and files
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    supervisor = textwrap.dedent(
        f"""
        import os
        from guardrail.observe import metrics
        metrics.ADMIN_UNAUTHORIZED.inc(3)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(folder)!r}
        print(metrics.render(None)[0].decode())
        """
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    out = subprocess.run(
        [sys.executable, "-c", supervisor], env=env, check=True, timeout=60,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "guardrail_admin_unauthorized_total 7.0" in out  # 2 + 2 from workers, 3 its own
    assert 'guardrail_refused_total{reason="client_busy"} 10.0' in out


def test_no_folder_for_the_workers_metrics_is_a_start_up_error_naming_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only root file system without a writable TMPDIR: the supervisor cannot make the
    folder the workers share their metrics through, and says so before any worker starts."""
    import tempfile

    from guardrail.cli import main
    from tests.kit.paths import PROXY_FIXTURES

    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(30, "Read-only file system")

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    argv = ["serve", "--upstream", "https://x.test", "--policies", str(PROXY_FIXTURES / "policies"),
            "--port", "0", "--workers", "2"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "flag --workers: workers: 2 workers share their metrics through a folder" in err
    assert "Read-only file system" in err and "PROMETHEUS_MULTIPROC_DIR" in err
