"""A minimal stand-in for the stream guard, to drive the stream codecs in tests.

It follows the item protocol documented in ``guardrail.formats.streams``: text is held per slot
and released at TextEnd (``full`` mode, rewritten by ``rewrite``) or released as it comes
(``pass`` mode, unchanged); ``append`` is emitted at ReplyEnd; ``annotation`` at the terminator.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from guardrail.formats.streams import (
    Forward,
    ReplyEnd,
    StreamCodec,
    StreamItem,
    Terminator,
    TextDelta,
    TextEnd,
)


@dataclass
class Driver:
    codec: StreamCodec[Any]
    mode: str = "full"  # "full": hold each slot until TextEnd; "pass": release every delta
    rewrite: Callable[[str], str] = lambda text: text
    append: str = ""
    annotation: Mapping[str, object] | None = None
    terminated: bool = False
    seen: dict[int, str] = field(default_factory=dict)  # upstream text per reply
    held: dict[Hashable, list[str]] = field(default_factory=dict)
    log: list[StreamItem[Any]] = field(default_factory=list)

    def handle(self, items: Iterable[StreamItem[Any]]) -> bytes:
        out = b""
        for item in items:
            self.log.append(item)
            if isinstance(item, TextDelta):
                self.seen[item.reply] = self.seen.get(item.reply, "") + item.text
                if self.mode == "pass":
                    out += self.codec.text(item.slot, item.text)
                else:
                    self.held.setdefault(item.slot, []).append(item.text)
            elif isinstance(item, TextEnd):
                text = "".join(self.held.pop(item.slot, []))
                out += self.codec.text(item.slot, self.rewrite(text) if text else "")
            elif isinstance(item, ReplyEnd):
                out += self.codec.append(item.reply, self.append)
            elif isinstance(item, Forward):
                out += self.codec.render(item.event)
            elif isinstance(item, Terminator):
                self.terminated = True
                out += self.codec.finish(item.event, self.annotation)
        return out

    def run(self, chunks: Iterable[bytes], *, clean_end: bool = True) -> bytes:
        out = b""
        for chunk in chunks:
            out += self.handle(self.codec.feed_bytes(chunk))
        out += self.handle(self.codec.close())
        if clean_end and not self.terminated:
            out += self.codec.finish(None, self.annotation)
        return out


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def cut(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` split at the given offsets (those past the end are ignored)."""
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]
