"""Newline-delimited JSON: an incremental line decoder and a line encoder, both pure.

Ollama streams ``application/x-ndjson``: one JSON value per line, lines ending with LF. The decoder
cuts the input at LF bytes (a CR before the LF is tolerated), so a chunk boundary anywhere, even
inside a multi-byte UTF-8 character, never changes the result: a line is decoded only once it is
complete. Each line comes out as an :class:`NDJSONLine` with its exact bytes (``raw``, terminator
included) next to the parsed value, so a line the proxy does not touch (blank, not JSON, not an
object) is re-emitted byte for byte. The concatenation of ``raw`` over everything :meth:`feed`
and :meth:`flush` return equals the input.
"""

from __future__ import annotations

from typing import NamedTuple

from guardrail.formats import jsontext

__all__ = ["NDJSONDecoder", "NDJSONLine", "encode_line"]


class NDJSONLine(NamedTuple):
    """One line: its exact bytes and the parsed JSON value.

    ``value`` is None when the line is blank, not UTF-8 or not JSON (and also for a literal
    ``null`` line, which carries nothing a consumer could use either).
    """

    raw: bytes
    value: object | None


class NDJSONDecoder:
    """Incremental NDJSON decoder: ``feed(chunk) -> lines``, then ``flush()`` at the end.

    Per-stream state only; memory is the current unfinished line.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # offset from which no LF has been found yet

    def feed(self, chunk: bytes) -> list[NDJSONLine]:
        """Consume ``chunk``; return the lines it completes, in order."""
        self._buf += chunk
        out: list[NDJSONLine] = []
        start = 0
        while (end := self._buf.find(b"\n", max(start, self._scan))) != -1:
            out.append(_line(bytes(self._buf[start : end + 1])))
            start = end + 1
        self._scan = len(self._buf) - start
        del self._buf[:start]
        return out

    def flush(self) -> list[NDJSONLine]:
        """End of stream: the last line if it lacks its LF (parsed all the same)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        return [_line(rest)] if rest else []


def _line(raw: bytes) -> NDJSONLine:
    text = raw.strip()
    if not text:
        return NDJSONLine(raw, None)
    try:
        value: object = jsontext.loads(text)  # invalid UTF-8 is read as U+FFFD
    except (ValueError, RecursionError):
        return NDJSONLine(raw, None)
    return NDJSONLine(raw, value)


def encode_line(value: object) -> bytes:
    """Serialise ``value`` as one compact NDJSON line ending in LF.

    Non-ASCII text is written as UTF-8; a lone surrogate (which UTF-8 cannot carry) as its
    ``\\u`` escape, so the output is always valid UTF-8.
    """
    return jsontext.dumps(value) + b"\n"
