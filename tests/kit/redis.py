"""A real redis-server for the tests: Debian's binary on a free loopback port, in a temporary
folder, persisting nothing (``--save '' --appendonly no``), stopped (and reaped) after the test.

``stop()``/``start()`` restart it on the same port (a Redis outage and its return);
``pause()``/``resume()`` send SIGSTOP/SIGCONT (a Redis that accepts connections but never
answers: the timeout path). ``.ci/run`` installs the binary; without it the tests that need one
are skipped with a reason naming the missing binary.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .servers import free_port

REDIS_SERVER = shutil.which("redis-server")
MISSING = "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, folder: Path) -> None:
        assert REDIS_SERVER is not None, MISSING
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        command = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.folder / "redis.log"),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20  # a start-up wait, not an assertion about speed
        while not _answers(self.port):
            if self.process.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited {self.process.returncode}: {log}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 20 s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server must be able to die
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def dump(self) -> list[bytes]:
        """Every key and every value in the server, as raw bytes (SCAN, TYPE-aware reads)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        out: list[bytes] = []
        try:
            for key in client.scan_iter(count=1000):
                out.append(key)
                kind = client.type(key)
                if kind == b"hash":
                    for field, value in client.hgetall(key).items():
                        out += [field, value]
                elif kind == b"string":
                    out.append(client.get(key) or b"")
                elif kind in (b"list",):
                    out += client.lrange(key, 0, -1)
                elif kind in (b"set",):
                    out += list(client.smembers(key))
                elif kind in (b"zset",):
                    out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
                else:
                    out.append(client.dump(key) or b"")
        finally:
            client.close()
        return out
