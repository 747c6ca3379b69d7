"""``guardrail serve --workers 2`` as a real process tree (issue 13, item 3).

Each promise is tried against the real thing: a supervisor and two spawned workers sharing one
port, the demo upstream, the admin listener. Which process served a request is read from the
log line it wrote (every worker's lines carry ``worker`` and ``pid``), never from a response
header. Waits are for conditions, with generous limits; nothing is timed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.kit.paths import PROXY_FIXTURES
from tests.kit.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TOKEN = "workers-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PRAISE = "You're absolutely right."  # validation.praise hits it: one audit event per request
NEW_POLICY = """
  - id: workers.added{n}
    category: validation
    description: Added by a reload, to change the digest.
    severity: low
    condition: reply.forbidden
    actions:
      - annotate
"""


@dataclass
class Pod:
    proc: subprocess.Popen[bytes]
    proxy: str
    admin: str
    log: Path
    audit: Path
    policies: Path
    metrics_dir: Path | None

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return out

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = condition()
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"guardrail exited ({self.proc.returncode}) waiting: {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting: {what}")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.admin}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.admin}/metrics", headers=AUTH, timeout=10).text
        total, found = 0.0, False
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total, found = total + float(match.group(3)), True
        assert found, f"no series {name}{labels}"
        return total

    def chat(self, reply: str = PRAISE) -> httpx.Response:
        body = {"model": "guardrail-demo", "messages": [{"role": "user", "content": "I quit."}]}
        return httpx.post(
            f"{self.proxy}/v1/chat/completions",
            json=body,
            headers={"x-demo-reply": reply},
            timeout=30,
        )

    def worker_pids(self) -> dict[int, int]:
        """The pid now serving each worker slot (the latest ``worker_started`` per slot)."""
        pids: dict[int, int] = {}
        for line in self.events("worker_started"):
            pids[line["worker"]] = line["worker_pid"]
        return pids



@contextmanager
def pod(
    tmp: Path, *extra: str, drain_timeout: float = 25, env_extra: dict[str, str] | None = None
) -> Iterator[Pod]:
    """``guardrail serve --demo --workers 2`` on free ports, its own copy of the fixture policies
    (so a test may edit them), the audit on a file, logs as JSON lines in a file."""
    policies = tmp / "policies"
    shutil.copytree(PROXY_FIXTURES / "policies", policies)
    log, audit = tmp / "guardrail.log", tmp / "audit" / "audit.jsonl"
    port, admin = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GUARDRAIL_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        GUARDRAIL_ADMIN_TOKEN=TOKEN,
        GUARDRAIL_AUDIT_KEY="workers-audit-key-0123456789",
        GUARDRAIL_DRAIN_TIMEOUT=str(drain_timeout),
    )
    env.update(env_extra or {})
    argv = [
        sys.executable, "-m", "guardrail", "serve", "--demo", "--workers", "2",
        "--port", str(port), "--admin-port", str(admin), "--demo-port", str(free_port()),
        "--policies", str(policies), "--log-format", "json",
        "--audit-sink", "file", "--audit-path", str(audit), *extra,
    ]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
    running = Pod(
        proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", log, audit, policies, None
    )
    try:
        running.wait_for("both workers ready", running.ready, timeout=120)
        yield running
    finally:
        if proc.poll() is None:
            proc.terminate()  # a drain: the supervisor removes its metrics folder
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        for pid in running.worker_pids().values():  # only left after a SIGKILL; make sure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ready = [e for e in running.lines() if e.get("event") == "workers_ready"]
        if ready and proc.returncode == -signal.SIGKILL:  # nobody could clean up
            shutil.rmtree(ready[0]["metrics_dir"], ignore_errors=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    with pod(tmp_path_factory.mktemp("workers")) as running:
        yield running


def served_by(pod: Pod) -> dict[int, int]:
    """Requests per worker slot, from the canonical request lines."""
    counts: dict[int, int] = {}
    for line in pod.events("request"):
        counts[line["worker"]] = counts.get(line["worker"], 0) + 1
    return counts


def test_both_workers_serve_and_metrics_sum_every_request(shared: Pod) -> None:
    """Requests spread over both processes (seen from each line's ``worker`` and ``pid``), and
    the supervisor's ``/metrics`` counts each request once, whichever worker served it."""
    before = shared.metric("guardrail_requests_total", outcome="rewritten")
    sent = 0
    lock = threading.Lock()

    def send() -> None:
        nonlocal sent
        response = shared.chat()
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"].endswith(
            "What makes this feel right to you?"
        )
        with lock:
            sent += 1

    def both_served() -> bool:
        threads = [threading.Thread(target=send) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return len(served_by(shared)) == 2

    shared.wait_for("requests served by both workers", both_served)
    # the canonical line and the counters are written as a request ends, which may be just
    # after its client has the response: wait for them, then check they are exact
    shared.wait_for("a line per request", lambda: sum(served_by(shared).values()) >= sent)
    counts = served_by(shared)
    pids = {line["pid"] for line in shared.events("request")}
    assert pids == set(shared.worker_pids().values()) and len(pids) == 2
    assert sum(counts.values()) == sent  # one line per request, in one process each
    # every request was rewritten (praise gets a question): the sum over workers is exact
    shared.wait_for(
        "every request counted",
        lambda: shared.metric("guardrail_requests_total", outcome="rewritten") - before >= sent,
    )
    assert shared.metric("guardrail_requests_total", outcome="rewritten") - before == sent
    assert shared.metric("guardrail_policy_hits_total", policy="validation.praise") == sent
    assert shared.metric("guardrail_requests_in_flight") == 0  # livesum of two idle workers
    # the supervisor's own counter (the admin listener is its) joins the workers' sums
    assert httpx.get(f"{shared.admin}/metrics", timeout=5).status_code == 401
    assert shared.metric("guardrail_admin_unauthorized_total") >= 1
    stats = httpx.get(f"{shared.admin}/-/stats", headers=AUTH, timeout=10).json()
    assert stats["policy_digest"] and {p["id"] for p in stats["policies"]} >= {"validation.praise"}


def test_audit_lines_from_both_workers_never_interleave(shared: Pod) -> None:
    """Both workers append to one audit file: every line is one whole JSON event, one per
    policy hit, none lost, none merged."""
    before = shared.metric("guardrail_policy_hits_total", policy="validation.praise")
    threads = [threading.Thread(target=shared.chat) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared.wait_for(
        "every hit recorded",
        lambda: shared.metric("guardrail_audit_events_total", result="written") >= before + 40,
    )
    hits = shared.metric("guardrail_policy_hits_total", policy="validation.praise")
    written = shared.metric("guardrail_audit_events_total", result="written")
    assert hits == written == before + 40
    raw = shared.audit.read_bytes()
    assert raw.endswith(b"\n")
    events = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert len(events) == written == hits
    assert {e["policy"] for e in events} == {"validation.praise"}
    assert len({e["request_id"] for e in events}) == len(events)
    # one conversation hash for the same first message: both workers share audit.key
    assert len({e["conversation"] for e in events}) == 1


def _add_policy(pod: Pod, n: int) -> None:
    path = pod.policies / "policies.yaml"
    path.write_text(path.read_text(encoding="utf-8") + NEW_POLICY.format(n=n), encoding="utf-8")


def _reloads(pod: Pod, trigger: str, digest: str) -> dict[int, int]:
    """worker slot -> pid of each ``policy_reload`` line of ``trigger`` installing ``digest``."""
    return {
        line["worker"]: line["pid"]
        for line in pod.events("policy_reload")
        if line["trigger"] == trigger and line["policy_digest"] == digest
    }


def test_admin_reload_reaches_every_worker(shared: Pod) -> None:
    old = httpx.get(f"{shared.admin}/-/stats", headers=AUTH, timeout=10).json()["policy_digest"]
    _add_policy(shared, 1)
    response = httpx.post(f"{shared.admin}/-/reload", headers=AUTH, timeout=120)
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["changed"] is True and body["digest"] != old
    assert sorted(w["pid"] for w in body["workers"]) == sorted(shared.worker_pids().values())
    assert {w["digest"] for w in body["workers"]} == {body["digest"]}
    # each worker says so in its own log line, under its own pid
    assert _reloads(shared, "admin", body["digest"]) == shared.worker_pids()
    stats = httpx.get(f"{shared.admin}/-/stats", headers=AUTH, timeout=10).json()
    assert stats["policy_digest"] == body["digest"]
    assert "workers.added1" in {p["id"] for p in stats["policies"]}
    assert shared.metric("guardrail_policy_reloads_total", trigger="admin", result="success") == 2


def test_sighup_to_the_supervisor_reaches_every_worker(shared: Pod) -> None:
    _add_policy(shared, 2)
    before = httpx.get(f"{shared.admin}/-/stats", headers=AUTH, timeout=10).json()
    shared.proc.send_signal(signal.SIGHUP)

    def both_reloaded() -> dict[int, int] | None:
        lines = [line for line in shared.events("policy_reload") if line["trigger"] == "signal"]
        digests = {line["policy_digest"] for line in lines}
        if len(lines) == 2 and len(digests) == 1 and digests != {before["policy_digest"]}:
            return _reloads(shared, "signal", digests.pop())
        return None

    assert shared.wait_for("a SIGHUP reload in both workers", both_reloaded) == (
        shared.worker_pids()
    )
    fanned = shared.wait_for(
        "the fan-out line",
        lambda: [e for e in shared.events("policy_reload_fanned_out") if e["trigger"] == "signal"],
    )
    assert fanned[0]["ok"] is True
    assert shared.proc.poll() is None and shared.ready()


def test_a_bad_set_is_refused_by_every_worker_and_the_last_good_one_serves(shared: Pod) -> None:
    good = httpx.get(f"{shared.admin}/-/stats", headers=AUTH, timeout=10).json()["policy_digest"]
    path = shared.policies / "policies.yaml"
    kept = path.read_text(encoding="utf-8")
    path.write_text(kept + "\n  - id: broken.one\n    condition: no.such.detector\n", "utf-8")
    try:
        response = httpx.post(f"{shared.admin}/-/reload", headers=AUTH, timeout=120)
    finally:
        path.write_text(kept, encoding="utf-8")
    body = response.json()
    assert response.status_code == 422, body
    assert body["status"] == "refused" and body["digest"] == good
    assert body["error"]["file"].endswith("policies.yaml") and body["error"]["line"]
    assert body["error"]["policy_id"] == "broken.one"
    assert [w["status"] for w in body["workers"]] == ["refused", "refused"]
    refused = shared.events("policy_reload_failed")
    assert {(line["worker"], line["kept_digest"]) for line in refused} == {(0, good), (1, good)}
    assert shared.metric("guardrail_policy_reloads_total", trigger="admin", result="failure") == 2
    assert shared.metric("guardrail_policy_last_reload_successful") == 0  # livemin
    assert shared.ready()
    # both still enforce the last good set
    before = served_by(shared)

    def both_still_rewrite() -> bool:
        for _ in range(8):
            reply = shared.chat().json()["choices"][0]["message"]["content"]
            assert reply.endswith("right to you?")
        now = served_by(shared)
        return all(now.get(w, 0) > before.get(w, 0) for w in (0, 1))

    shared.wait_for("both workers serving the last good set", both_still_rewrite)


def test_a_killed_worker_is_replaced_and_counts_survive(shared: Pod) -> None:
    pids = shared.worker_pids()
    counted = shared.metric("guardrail_requests_total", outcome="rewritten")
    os.kill(pids[1], signal.SIGKILL)
    shared.wait_for(
        "the death logged",
        lambda: any(e["worker_pid"] == pids[1] for e in shared.events("worker_exited")),
    )
    shared.wait_for("a new worker in slot 1", lambda: shared.worker_pids()[1] != pids[1])
    shared.wait_for("ready again", shared.ready, timeout=120)
    new = shared.worker_pids()
    assert new[0] == pids[0] and new[1] != pids[1]
    exited = [e for e in shared.events("worker_exited") if e["worker_pid"] == pids[1]]
    assert exited[0]["status"] == -signal.SIGKILL
    # the dead worker's counts stay in the sums; the replacement serves
    assert shared.metric("guardrail_requests_total", outcome="rewritten") >= counted
    before = served_by(shared).get(1, 0)

    def replacement_serves() -> bool:
        for _ in range(8):
            assert shared.chat().status_code == 200
        return any(line["pid"] == new[1] for line in shared.events("request"))

    shared.wait_for("the replacement serving", replacement_serves)
    assert served_by(shared)[1] > before


def test_the_supervisor_watches_the_files_and_every_worker_reloads_once(tmp_path: Path) -> None:
    """``--watch-policies`` with workers: one watcher (the supervisor's), one fanned-out reload
    per change, each worker reloading once, not each worker watching on its own."""
    quick = {"GUARDRAIL_WATCH_INTERVAL": "0.2"}
    with pod(tmp_path, "--watch-policies", env_extra=quick) as running:
        _add_policy(running, 7)

        def both_reloaded() -> list[dict[str, Any]] | None:
            lines = [e for e in running.events("policy_reload") if e["trigger"] == "watch"]
            return lines if {e["worker"] for e in lines} == {0, 1} else None

        lines = running.wait_for("a watched change reloaded in both workers", both_reloaded)
        assert len({e["policy_digest"] for e in lines}) == 1
        fanned = running.wait_for(
            "the fan-out line (written once both answered)",
            lambda: [
                e for e in running.events("policy_reload_fanned_out") if e["trigger"] == "watch"
            ],
        )
        assert len(fanned) == 1 and fanned[0]["ok"] is True
        lines = [e for e in running.events("policy_reload") if e["trigger"] == "watch"]
        assert sorted(e["pid"] for e in lines) == sorted(running.worker_pids().values())
        assert len(lines) == 2  # once each


def test_an_erase_reaches_every_workers_memory_store(shared: Pod) -> None:
    """With the memory backend each worker keeps its own users: one ``DELETE`` on the
    supervisor's admin listener is run by every worker on its own store (each logs it, without
    the user). The request flow writes no state yet on this branch, so there is nobody to find:
    ``erased`` is false from both."""
    path = f"{shared.admin}/-/state/users/alice%40example.org"
    assert httpx.delete(path, timeout=30).status_code == 401
    response = httpx.delete(path, headers=AUTH, timeout=30)
    assert (response.status_code, response.json()) == (200, {"erased": False})
    lines = shared.events("user_state_erase")
    assert sorted(line["pid"] for line in lines) == sorted(shared.worker_pids().values())
    assert all(line["erased"] is False for line in lines)
    assert "alice" not in shared.log.read_text()


def _stream(proxy: str, words: int, started: threading.Event, out: dict[str, Any]) -> None:
    reply = " ".join(f"word{i}" for i in range(words))
    body = {"model": "guardrail-demo", "stream": True,
            "messages": [{"role": "user", "content": "Hello"}]}  # fmt: skip
    text, done = "", False
    try:
        with httpx.stream("POST", f"{proxy}/v1/chat/completions", json=body, timeout=60,
                          headers={"x-demo-reply": reply}) as response:  # fmt: skip
            out["port"] = response.extensions["network_stream"].get_extra_info("client_addr")[1]
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
                    started.set()
    except httpx.HTTPError as exc:
        out["error"] = type(exc).__name__
    out["text"], out["done"] = text, done
    started.set()


def _owner(pids: dict[int, int], proxy_port: int, client_port: int) -> int | None:
    """The worker slot whose process holds the server end of the connection from
    ``client_port`` (Linux: the socket's inode in /proc/net/tcp, matched in /proc/<pid>/fd)."""
    inode = None
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local, remote = fields[1], fields[2]
        ports = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16))
        if ports == (proxy_port, client_port):
            inode = fields[9]
    if inode is None:
        return None
    for slot, pid in pids.items():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return slot
            except OSError:
                continue
    return None


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/v1/models", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_sigterm_lets_streams_in_every_worker_finish_then_exits_0(tmp_path: Path) -> None:
    """Streams in flight on both workers when SIGTERM comes: both finish whole, readiness says
    draining, the port takes no new connection, and the supervisor exits 0 once both workers
    have, leaving no worker and no metrics folder behind."""
    words = 200  # one word every 30 ms: about 6 s each
    with pod(tmp_path) as running:
        pids = running.worker_pids()
        proxy_port = int(running.proxy.rsplit(":", 1)[1])
        outs: list[dict[str, Any]] = []
        clients: list[threading.Thread] = []
        holders: set[int | None] = set()

        def streams_on_both() -> bool:
            started, out = threading.Event(), {}
            client = threading.Thread(target=_stream, args=(running.proxy, words, started, out))
            client.start()
            assert started.wait(30) and "port" in out, out
            outs.append(out)
            clients.append(client)
            holders.add(_owner(pids, proxy_port, out["port"]))
            return {0, 1} <= holders

        running.wait_for("streams in flight on both workers", streams_on_both)
        assert all(client.is_alive() for client in clients)  # all still streaming
        folder = Path(
            next(e for e in running.lines() if e.get("event") == "workers_ready")["metrics_dir"]
        )
        assert folder.is_dir()
        running.proc.send_signal(signal.SIGTERM)
        running.wait_for(
            "readiness draining",
            lambda: httpx.get(f"{running.admin}/-/ready", timeout=5).json()["status"]
            == "draining",
        )
        running.wait_for("the port closed", lambda: _refused(running.proxy))
        for client in clients:
            client.join(60)
        assert running.proc.wait(60) == 0
    for out in outs:
        assert out.get("done") is True, out.get("error")
        assert all(f"word{i}" in out["text"] for i in range(words))
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    stopped = [e for e in running.lines() if e.get("event") == "worker_stopped"]
    assert sorted(e["status"] for e in stopped) == [0, 0]
    assert not folder.exists()  # the private metrics folder is removed


def test_past_drain_timeout_streams_are_cut_and_the_exit_is_still_0(tmp_path: Path) -> None:
    """A stream longer than the grace period does not hold the supervisor up."""
    with pod(tmp_path, drain_timeout=0.5) as running:
        started, out = threading.Event(), {}
        client = threading.Thread(target=_stream, args=(running.proxy, 400, started, out))
        client.start()
        assert started.wait(30)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(60) == 0
        client.join(60)
    assert out.get("done") is not True  # cut before its end (400 words take 12 s)


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL to the supervisor (an OOM kill): nobody would restart, reload or scrape the
    workers, so each one sees its control pipe close, drains and exits instead of serving on
    unsupervised."""
    with pod(tmp_path) as running:
        pids = running.worker_pids()
        running.proc.kill()
        running.proc.wait(30)
        deadline = time.monotonic() + 60
        alive = set(pids.values())
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    alive.discard(pid)
            time.sleep(0.05)
        assert not alive, f"workers still running: {alive}"
        gone = [e for e in running.lines() if e.get("event") == "supervisor_gone"]
        assert sorted(e["pid"] for e in gone) == sorted(pids.values())


def test_a_crash_loop_stops_the_supervisor_with_status_1(tmp_path: Path) -> None:
    """A worker killed while the policy files are broken cannot come back (its replacement does
    not load them): the supervisor retries up to its restart limit, then stops everything and
    exits 1 so the service manager sees it, naming the cause in the log."""
    with pod(tmp_path) as running:
        pids = running.worker_pids()
        path = running.policies / "policies.yaml"
        path.write_text(path.read_text(encoding="utf-8") + "\n  - id: broken\n", "utf-8")
        os.kill(pids[0], signal.SIGKILL)
        assert running.proc.wait(300) == 1
        failed = [e for e in running.lines() if e.get("event") == "worker_start_failed"]
        assert failed and failed[0]["file"].endswith("policies.yaml")
        assert [e for e in running.lines() if e.get("event") == "worker_restart_limit"]
        # the healthy worker was drained and stopped too
        with pytest.raises(ProcessLookupError):
            os.kill(pids[1], 0)
