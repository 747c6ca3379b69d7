"""Server-Sent Events: an incremental decoder and an encoder, both pure.

The decoder implements the WHATWG HTML Living Standard, section 9.2.6 "Interpreting an event
stream" (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

* the stream is UTF-8; one leading byte order mark is dropped; invalid sequences decode to U+FFFD;
* a line ends with CRLF, a lone LF or a lone CR;
* a line starting with ``:`` is a comment and is ignored;
* ``field:value`` (one space after the colon is dropped) or a bare ``field`` (empty value);
  ``event`` sets the event type, ``data`` appends the value plus LF to the data buffer, ``id``
  sets the last event id unless the value holds a NUL, ``retry`` sets the reconnection time when
  the value is ASCII digits only; any other field is ignored;
* a blank line dispatches the event when the data buffer is not empty (the final LF removed);
  a block without any ``data`` line is not dispatched;
* at the end of the stream an unfinished event is discarded.

A proxy needs more than the dispatched events, so the decoder reports *every* block:

* each :class:`SSEEvent` carries ``raw``, the exact bytes of its block including the blank line
  that ends it. The concatenation of ``raw`` over everything :meth:`SSEDecoder.feed` and
  :meth:`SSEDecoder.flush` return equals the input, so an event the proxy does not touch (a
  comment, a keep-alive, an unknown field, a line that is not valid UTF-8) is re-emitted byte for
  byte by writing ``raw``.
* blocks the WHATWG algorithm would not dispatch (comments only, ``retry`` only, an ``event`` line
  without data) come out with ``data=None``; consumers that follow the standard skip them, the
  proxy forwards their ``raw``.
* :meth:`SSEDecoder.flush` returns the bytes after the last complete block as one event with
  ``data=None`` (the standard discards an unfinished event; the proxy may still forward it).

Memory is bounded when the caller sets ``max_event_bytes`` (h11's ``max_incomplete_event_size``):
an event whose bytes (its lines so far, the unfinished line included) exceed it stops the decoder.
It drops what it buffered, sets :attr:`SSEDecoder.overflow`, returns the events completed before
that one, and from then on ignores its input (``feed`` and ``flush`` return nothing): what follows
an event that was cut cannot be framed. An upstream sending ``data:`` lines with no blank line
never grows the buffer past the cap. Whether an event is over the cap does not depend on how the
input is cut.

Chunk boundaries never change the result: lines are cut at CR and LF bytes, which never occur
inside a multi-byte UTF-8 sequence, and decoded only once complete, so a character split between
two chunks is decoded whole. A CR that ends the buffered input is only interpreted once the next
byte is known (it may be the first half of a CRLF); the line it ends therefore waits for the next
chunk or for :meth:`~SSEDecoder.flush`. Upstreams that end lines with CRLF or LF never wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent", "encode_event"]

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    """One block of an event stream.

    ``event`` is the value of the last ``event`` field (None when the block has none; WHATWG then
    dispatches the type ``"message"``, see :attr:`type`). ``data`` is the joined ``data`` lines
    without the final LF, or None when the block has no ``data`` line (not dispatched). ``id`` and
    ``retry`` are the values set by this block, if any. ``raw`` is the exact upstream bytes of the
    block; events built by the proxy leave it empty and are serialised with :func:`encode_event`.
    """

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    raw: bytes = b""

    @property
    def type(self) -> str:
        """The event type a WHATWG consumer sees: ``event`` or ``"message"``."""
        return self.event or "message"

    @property
    def dispatched(self) -> bool:
        """Whether a WHATWG consumer would dispatch this block as an event."""
        return self.data is not None

    def encode(self) -> bytes:
        """``raw`` when the block came from upstream, else the serialised fields."""
        return self.raw or encode_event(self)


class SSEDecoder:
    """Incremental event-stream decoder: ``feed(chunk) -> events``, then ``flush()`` at the end.

    Per-stream state only; one decoder per stream. ``last_event_id`` follows the standard's last
    event id buffer (it persists across events). ``max_event_bytes`` (None: no cap) bounds the
    bytes of one event, see the module docstring.
    """

    def __init__(self, max_event_bytes: int | None = None) -> None:
        if max_event_bytes is not None and max_event_bytes < 1:
            raise ValueError("max_event_bytes must be at least 1")
        self.max_event_bytes = max_event_bytes
        self.overflow = False
        self._buf = bytearray()
        self._scan = 0  # offset in _buf from which no line end has been found yet
        self._block = bytearray()  # raw bytes of the lines of the current block
        self._first_line = True
        self._event: str | None = None
        self._data: list[str] | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the blocks it completes, in order."""
        if self.overflow:
            return []
        self._buf += chunk
        if self._first_line and self._buf[:3] != _BOM[: len(self._buf[:3])]:
            self._first_line = False  # no byte order mark can start this stream: nothing to drop
        if self._block or self._first_line or b"\r" in self._buf:
            out = self._lines(final=False)
        else:
            out = self._data_blocks()
            out = out + self._lines(final=False) if self._buf else out
        return out if self.max_event_bytes is None else self._bounded(out)

    def _bounded(self, events: list[SSEEvent]) -> list[SSEEvent]:
        """``events`` up to the first one over the cap; stop if it or the unfinished one is."""
        cap = self.max_event_bytes
        assert cap is not None
        for i, event in enumerate(events):
            if len(event.raw) > cap:
                self._stop()
                return events[:i]
        if len(self._block) + len(self._buf) > cap:
            self._stop()
        return events

    def _stop(self) -> None:
        self.overflow = True
        self._buf, self._scan = bytearray(), 0
        self._reset_block()

    def _data_blocks(self) -> list[SSEEvent]:
        """The common case, fast: leading blocks that are one ``data`` line and a blank line.

        Called only between blocks, on a buffer without CR, so each such block decodes exactly
        as :meth:`_lines` would decode it; the first other block ends the fast path.
        """
        out: list[SSEEvent] = []
        buf = self._buf
        start = 0
        while buf.startswith(b"data:", start):
            end = buf.find(b"\n", start)
            if end < 0 or buf[end + 1 : end + 2] != b"\n":
                break
            value = buf[start + 6 if buf[start + 5 : start + 6] == b" " else start + 5 : end]
            data = value.decode("utf-8", errors="replace")
            out.append(SSEEvent(data=data, raw=bytes(buf[start : end + 2])))
            start = end + 2
        if start:
            del buf[:start]
            self._scan = 0
        return out

    def flush(self) -> list[SSEEvent]:
        """End of stream: complete blocks still buffered, then the unfinished rest (``data=None``)."""
        if self.overflow:
            return []
        out = self._lines(final=True)
        if self._buf:
            self._block += self._buf
            self._buf.clear()
        if self._block:
            out.append(SSEEvent(raw=bytes(self._block)))
        self._reset_block()
        self._scan = 0
        return out

    def _lines(self, *, final: bool) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        start = 0
        buf = self._buf
        while True:
            match = _LINE_END.search(buf, max(start, self._scan))
            if match is None:
                self._scan = len(buf)
                break
            end = match.end()
            if not final and match.group() == b"\r" and end == len(buf):
                self._scan = match.start()  # a CR at the very end may be half of a CRLF
                break
            line = bytes(buf[start : match.start()])
            self._block += buf[start:end]
            start = end
            self._scan = end
            event = self._line(line)
            if event is not None:
                out.append(event)
        if start:
            del buf[:start]
            self._scan -= start
        return out

    def _line(self, line: bytes) -> SSEEvent | None:
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            return self._dispatch()
        text = line.decode("utf-8", errors="replace")
        if text.startswith(":"):
            return None
        field, colon, value = text.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            if self._data is None:
                self._data = []
            self._data.append(value)
        elif field == "id":
            if "\x00" not in value:
                self._id = value
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent:
        data = None if self._data is None else "\n".join(self._data)
        event = SSEEvent(
            event=self._event, data=data, id=self._id, retry=self._retry, raw=bytes(self._block)
        )
        self._reset_block()
        return event

    def _reset_block(self) -> None:
        self._block = bytearray()
        self._event = None
        self._data = None
        self._id = None
        self._retry = None


def encode_event(event: SSEEvent) -> bytes:
    """Serialise ``event``'s fields (never ``raw``) as one block ending in a blank line.

    Lines end with LF. Field order is ``event``, ``id``, ``retry``, then one ``data`` line per line
    of ``data`` (a CR, LF or CRLF in ``data`` starts a new ``data`` line, which a decoder joins back
    with LF). A block with neither data nor any other field encodes as ``":\\n\\n"``, an empty
    comment, so the result is always a well-formed block. ``event`` and ``id`` must not contain
    line breaks (ValueError), and ``id`` must not contain NUL, which decoders would ignore.
    """
    lines: list[str] = []
    if event.event is not None:
        _check_single_line("event", event.event)
        lines.append(f"event: {event.event}")
    if event.id is not None:
        _check_single_line("id", event.id)
        if "\x00" in event.id:
            raise ValueError("SSE id must not contain NUL")
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        if event.retry < 0:
            raise ValueError("SSE retry must be a non-negative integer")
        lines.append(f"retry: {event.retry}")
    if event.data is not None:
        lines.extend(f"data: {part}" for part in _BREAK.split(event.data))
    if not lines:
        lines.append(":")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _check_single_line(field: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {field} must not contain a line break")
