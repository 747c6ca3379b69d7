"""Headless Chromium for the dashboard tests: the command-line modes (``--dump-dom``,
``--screenshot``, each with a virtual-time budget so the page's fetch has answered before the
capture) and a minimal DevTools-protocol client over ``--remote-debugging-pipe`` to measure the
laid-out page (scroll width at a given viewport), which the command-line modes cannot report.

Needs Debian's ``chromium`` package: without it the tests skip, except under CI (``CI`` set),
where they fail instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Self

import pytest

VIRTUAL_TIME_BUDGET_MS = 8000
"""Virtual time the page gets before a capture: without it headless Chromium captures the page
before its first ``/-/stats`` call has answered, and the screenshot shows empty tiles."""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium not installed (Debian package 'chromium'); CI must install it")
    pytest.skip("chromium not installed (Debian package 'chromium')")


def _flags(profile: Path, width: int, height: int) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ]


def headless(
    browser: str, url: str, tmp_path: Path, *mode: str, width: int = 1400, height: int = 1500
) -> tuple[str, str]:
    """Run headless Chromium on ``url`` in one command-line mode; returns (stdout, stderr with
    the console messages)."""
    done = subprocess.run(
        [
            browser,
            *_flags(tmp_path / "chromium-profile", width, height),
            "--enable-logging=stderr",
            "--v=0",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
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


class DevTools:
    """One headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the
    browser), with one page open at ``url``."""

    def __init__(self, browser: str, url: str, profile: Path, width: int, height: int) -> None:
        command_read, self._to_browser = os.pipe()
        self._from_browser, answer_write = os.pipe()
        # above 4, so bash's "3<&r 4>&w" cannot clobber one end with the other
        child_in = fcntl.fcntl(command_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(answer_write, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (command_read, answer_write):
            os.close(fd)
        flags = [*_flags(profile, width, height), "--remote-debugging-pipe", url]
        plumb = f'exec "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", plumb, "bash", browser, *flags],
            pass_fds=(child_in, child_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next = 0
        self.session = ""

    def __enter__(self) -> Self:
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        self.session = attached["sessionId"]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close", session=False)
        except (OSError, AssertionError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events met on the way are dropped)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._next:
                assert "error" not in answer, answer
                result: dict[str, Any] = answer.get("result", {})
                return result

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 65536)
            assert chunk, "chromium closed the DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        found: dict[str, Any] = json.loads(message)
        return found

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, deadline_s: float = 60.0) -> None:
        """Poll ``expression`` until it is true (a readiness wait, not a timing assertion). The
        page may not have a body yet at the first calls: guard the expression for that."""
        deadline = time.monotonic() + deadline_s
        while not self.evaluate(expression):
            assert time.monotonic() < deadline, f"page never satisfied {expression}"
            time.sleep(0.1)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _unfilter(kind: int, line: bytearray, prev: bytes, bpp: int) -> None:
    """Undo one PNG row filter in place (PNG spec, section 9)."""
    if kind == 0:
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up, corner = prev[i], (prev[i - bpp] if i >= bpp else 0)
        base = (left, up, (left + up) // 2, _paeth(left, up, corner))[kind - 1]
        line[i] = (line[i] + base) & 0xFF


def png_colours(path: Path) -> int:
    """How many distinct colours an 8-bit RGB or RGBA PNG (as Chromium writes them) holds: a
    blank capture holds one or two."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytes(stride), set()
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], line, prev, bpp)
        colours.update(bytes(line[i : i + bpp]) for i in range(0, stride, bpp))
        prev = bytes(line)
    return len(colours)
