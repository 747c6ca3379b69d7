"""JSON libraries compared on the proxy's own work: parse a request, parse and re-serialise a reply.

    python -m bench.codec_bench        (orjson / msgspec are measured when installed)

Per non-streamed request the proxy parses the request body (the conversation), parses the
upstream reply, and serialises the rewritten reply with its ``guardrail`` annotation. This
times exactly those three steps on the mock's bodies (1 KB and 10 KB replies, 10 turns of
history) for each available library, as microseconds per request.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from bench.engine_bench import time_call
from bench.texts import REPLIES, chat_body, pad_reply
from bench.wire import chat_completion

__all__ = ["codecs", "main"]

Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def codecs() -> dict[str, Codec]:
    """The JSON libraries importable here: name -> (loads, dumps)."""
    found: dict[str, Codec] = {"json (stdlib)": (json.loads, _stdlib_dumps)}
    try:
        orjson: Any = importlib.import_module("orjson")
        found["orjson"] = (orjson.loads, orjson.dumps)
    except ImportError:
        pass
    try:
        msgspec: Any = importlib.import_module("msgspec")
        found["msgspec"] = (msgspec.json.decode, msgspec.json.encode)
    except ImportError:
        pass
    return found


def _round_trip(codec: Codec, request: bytes, reply: bytes) -> bytes:
    loads, dumps = codec
    loads(request)
    body = loads(reply)
    body["guardrail"] = {"inspected": True, "hits": [], "signals": {"user.distress": False}}
    return dumps(body)


def main(argv: Sequence[str] | None = None) -> int:
    request = json.dumps(chat_body("How are you?", stream=False, turns=11)).encode()
    print("| JSON library | 1 KB reply: µs per request | 10 KB reply: µs per request |")
    print("| --- | --- | --- |")
    for name, codec in codecs().items():
        cells = []
        for size in (1_000, 10_000):
            reply = chat_completion(pad_reply(REPLIES[0].text, size), 0)
            cells.append(time_call(partial(_round_trip, codec, request, reply), 0.2) * 1e6)
        print(f"| {name} | {cells[0]:.1f} | {cells[1]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
