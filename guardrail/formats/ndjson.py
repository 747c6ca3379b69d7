"""Newline-delimited JSON: an incremental line decoder and a line encoder, both pure.

Ollama streams ``application/x-ndjson``: one JSON value per line, lines ending with LF. The decoder
cuts the input at LF bytes (a CR before the LF is tolerated), so a chunk boundary anywhere, even
inside a multi-byte UTF-8 character, never changes the result: a line is decoded only once it is
complete. Each line comes out as an :class:`NDJSONLine` with its exact bytes (``raw``, terminator
included) next to the parsed value, so a line the proxy does not touch (blank, not JSON, not an
object) is re-emitted byte for byte. The concatenation of ``raw`` over everything :meth:`feed`
and :meth:`flush` return equals the input.

``max_line_bytes`` (a constructor argument; None: no cap) bounds the bytes of one line, its LF
included: a line over it stops the decoder, which drops what it buffered, sets
:attr:`NDJSONDecoder.overflow`, returns the lines completed before, and ignores the rest of its
input. Memory is then at most the cap plus one chunk, however long an upstream's line.
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

    def __init__(self, max_line_bytes: int | None = None) -> None:
        if max_line_bytes is not None and max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        self.overflow = False
        self._buf = bytearray()
        self._scan = 0  # offset from which no LF has been found yet

    def feed(self, chunk: bytes) -> list[NDJSONLine]:
        """Consume ``chunk``; return the lines it completes, in order."""
        if self.overflow:
            return []
        self._buf += chunk
        cap = self.max_line_bytes
        out: list[NDJSONLine] = []
        start = 0
        while (end := self._buf.find(b"\n", max(start, self._scan))) != -1:
            if cap is not None and end + 1 - start > cap:
                return self._stop(out)
            out.append(_line(bytes(self._buf[start : end + 1])))
            start = end + 1
        self._scan = len(self._buf) - start
        del self._buf[:start]
        if cap is not None and len(self._buf) > cap:
            return self._stop(out)
        return out

    def _stop(self, out: list[NDJSONLine]) -> list[NDJSONLine]:
        self.overflow = True
        self._buf, self._scan = bytearray(), 0
        return out

    def flush(self) -> list[NDJSONLine]:
        """End of stream: the last line if it lacks its LF (parsed all the same)."""
        if self.overflow:
            return []
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
