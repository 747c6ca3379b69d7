"""Memory per stream is bounded by the holdback window, not by the reply's length.

A memory bound, measured with tracemalloc (peak of traced allocations while the stream runs),
not a timing assertion: the upstream is generated lazily and the output is counted and dropped,
so what stays allocated is the pump's, the guard's and the engine's own state.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from guardrail.guard import TextGuard
from guardrail.guard.stream import StreamGuard


from .guardkit import (
    DISTRESS,
    POLICIES,
)

pytestmark = pytest.mark.slow

MB = 1 << 20
# Sentences that keep every kind of policy busy: replaced, removed, a shadow reply detector.
_SENTENCES = [
    "You are absolutely right about that. ",
    "Tea is warm and the evening is quiet, caf\u00e9 \U0001f375. ",
    "I will always be here for you. ",
    "hello again, said the kettle. ",
    "A long day ends, and that is fine.\n",
]
_TEXT = "".join(_SENTENCES)


_BLOCK = _TEXT * 20
_PIECES = [_BLOCK[i : i + 400] for i in range(0, len(_BLOCK), 400)]  # pieces cut mid-word


def _text_of(size: int) -> Iterator[str]:
    """About ``size`` characters of reply in pieces, generated as they are consumed."""
    for _ in range(size // len(_BLOCK) + 1):
        yield from _PIECES


def _event(choice: dict[str, object]) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return b"data: " + json.dumps({**chunk, "choices": [choice]}).encode() + b"\n\n"


_ROLE = _event({"index": 0, "delta": {"role": "assistant"}, "finish_reason": None})
_EVENTS = [_event({"index": 0, "delta": {"content": p}, "finish_reason": None}) for p in _PIECES]
_END = _event({"index": 0, "delta": {}, "finish_reason": "stop"}) + b"data: [DONE]\n\n"


async def _upstream(size: int) -> AsyncIterator[bytes]:
    """About ``size`` characters of reply as chat chunks (encoded once, before tracing)."""
    yield _ROLE
    for _ in range(size // len(_BLOCK) + 1):
        for event in _EVENTS:
            yield event
    yield _END


async def _pump_peak(size: int) -> tuple[int, int]:
    guard = StreamGuard("openai.chat", POLICIES, DISTRESS)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = 0
    async for piece in guard.pump(_upstream(size)):
        out += len(piece)
    assert guard.report.terminated and out > size // 2
    return tracemalloc.get_traced_memory()[1] - base, out


def _guard_peak(size: int) -> int:
    guard = TextGuard(POLICIES, DISTRESS)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    released = 0
    for piece in _text_of(size):
        released += len(guard.feed(piece))
    result = guard.finish()
    assert result.verdict is not None and len(result.verdict.hits) >= 3
    assert released > size * 0.3  # about half the sentences are removed or replaced
    return tracemalloc.get_traced_memory()[1] - base


def _traced(run: Callable[[], int]) -> int:
    tracemalloc.start()
    try:
        return run()
    finally:
        tracemalloc.stop()


def test_text_guard_memory_is_flat() -> None:
    _traced(lambda: _guard_peak(64 * 1024))  # warm-up: one-time allocations are not the stream's
    small = _traced(lambda: _guard_peak(MB // 4))
    large = _traced(lambda: _guard_peak(2 * MB))
    assert small < 128 * 1024 and large < 128 * 1024
    assert large < small * 1.5 + 16 * 1024  # 8x the text, not 8x the memory


@pytest.mark.anyio
async def test_pump_memory_is_flat() -> None:
    """Several MB through the pump (codec + TextGuard + engine): 1 MB and 8 MB peak alike."""
    tracemalloc.start()
    try:
        await _pump_peak(64 * 1024)  # warm-up: one-time allocations are not the stream's
        small, _ = await _pump_peak(1 * MB)
        large, out = await _pump_peak(8 * MB)
    finally:
        tracemalloc.stop()
    assert out > 4 * MB
    assert small < 256 * 1024 and large < 256 * 1024
    assert large < small * 1.5 + 32 * 1024
