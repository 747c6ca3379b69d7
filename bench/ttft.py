"""Time to first token of streamed replies, measured from the client side at low concurrency.

A small asyncio client over raw keep-alive sockets (no HTTP library in the timing path) sends
streamed requests and timestamps, per request:

* ``first``: the first byte of assistant text (an SSE event whose ``content``/``text`` is not
  empty; whatever a proxy puts first, a prepended crisis line included, counts);
* ``sentence``: the end of the first sentence of text (``.``, ``!`` or ``?`` then a space);
* ``end``: the chunked terminator.

``sentence - first`` measured direct is "the time of one sentence", the most a ``sentence``
holdback may add to the time to first token. Pacing comes from the mock's ``x-mock-pace``
header, so the same mock and proxy serve paced and unpaced runs.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["StreamTiming", "TTFTResult", "measure", "stream_once"]

_TEXT = re.compile(rb'"(?:content|text)"\s*:\s*"((?:[^"\\]|\\.)+)"')
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")


@dataclass(frozen=True)
class StreamTiming:
    """Milliseconds from sending the request to each mark."""

    first: float
    sentence: float
    end: float


@dataclass(frozen=True)
class TTFTResult:
    """Medians and p90s over ``n`` streams at ``concurrency``."""

    concurrency: int
    n: int
    first_p50: float
    first_p90: float
    sentence_p50: float
    end_p50: float


def _request(host: str, port: int, path: str, body: bytes, pace: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-mock-pace: {pace}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _texts(data: bytes) -> str:
    return "".join(json.loads(b'"' + m + b'"') for m in _TEXT.findall(data))


async def stream_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> StreamTiming:
    """Send one streamed request on an open connection and time its marks."""
    start = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise RuntimeError(f"stream answered {status!r}")
    first = sentence = 0.0
    text = ""
    buf = b""
    while not buf.endswith(b"0\r\n\r\n"):
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("connection closed mid-stream")
        now = time.perf_counter()
        buf += data
        if not sentence:
            text += _texts(data)  # an event cut across two reads is caught on the next one
            if text and not first:
                first = now
            if _SENTENCE_END.search(text + " "):
                sentence = now
    end = time.perf_counter()
    ms = 1000.0
    return StreamTiming((first - start) * ms, ((sentence or end) - start) * ms, (end - start) * ms)


async def _client(
    host: str, port: int, requests: Sequence[bytes], count: int, out: list[StreamTiming]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(count):
            out.append(await stream_once(reader, writer, requests[i % len(requests)]))
    finally:
        writer.close()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(
    url: str, bodies: Sequence[bytes], concurrency: int, per_client: int, pace: str, warmup: int
) -> TTFTResult:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port_s = hostport.partition(":")
    port = int(port_s or 80)
    requests = [_request(host, port, "/" + path, b, pace) for b in bodies]
    await _client(host, port, requests, warmup, [])
    timings: list[StreamTiming] = []
    await asyncio.gather(
        *(_client(host, port, requests, per_client, timings) for _ in range(concurrency))
    )
    return TTFTResult(
        concurrency=concurrency,
        n=len(timings),
        first_p50=statistics.median(t.first for t in timings),
        first_p90=_p([t.first for t in timings], 0.9),
        sentence_p50=statistics.median(t.sentence for t in timings),
        end_p50=statistics.median(t.end for t in timings),
    )


def measure(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int = 1,
    per_client: int = 30,
    pace: str = "20,5",
    warmup: int = 3,
) -> TTFTResult:
    """Time ``concurrency * per_client`` streams against ``url`` (``http://host:port/path``)."""
    return asyncio.run(_measure(url, bodies, concurrency, per_client, pace, warmup))
