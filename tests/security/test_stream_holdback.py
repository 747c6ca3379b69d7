"""A stream built to make the holdback window cost quadratic CPU (issue 11, defect 6).

The sentence holdback keeps the unfinished sentence, at most ``max_holdback_chars``. A reply with
no sentence end and no space (one long token, a base64 blob, a run of dots) used to be re-scanned
or re-fed to the sentence splitter after every cut: 10 MB without a space took 224 s of CPU
against 2 s for 10 MB of words, while every other client of the process waited. The work must
be linear for any input. These tests check the algorithmic property itself (how many characters
the splitter is handed, how big its buffer gets, how many regex attempts a run costs), not a
time; the figures are in ``bench/README.md`` (``python -m bench.holdback_bench``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from guardrail.guard import text as guard_module
from guardrail.policy import Conversation
from guardrail.policy import text as text_module
from guardrail.policy.text import SentenceSplitter, split_sentences
from guardrail.guard.stream import StreamGuard

from tests.kit.policysets import STACK_POLICIES
from tests.kit.wire import CHAT, chat_stream

from ._streamkit import post, running

MB = 1 << 20
CAP = 1000  # the default max_holdback_chars
DISTRESS = Conversation.of(("user", "I feel hopeless tonight"))


class CountingSplitter(SentenceSplitter):
    """The real splitter, counting the characters it is handed and its largest buffer."""

    fed = 0
    largest = 0

    def feed(self, text: str) -> list[str]:
        CountingSplitter.fed += len(text)
        out = super().feed(text)
        CountingSplitter.largest = max(CountingSplitter.largest, len(self._buf))
        return out


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingSplitter]:
    CountingSplitter.fed = CountingSplitter.largest = 0
    monkeypatch.setattr(guard_module, "SentenceSplitter", CountingSplitter)
    return CountingSplitter


def released_text(data: bytes) -> str:
    text = ""
    for block in data.split(b"\n\n"):
        if block.startswith(b"data: {"):
            obj = json.loads(block[len(b"data: ") :])
            text += "".join(c["delta"].get("content") or "" for c in obj["choices"])
    return text


@pytest.mark.slow
@pytest.mark.parametrize("piece", [2 * MB, 4, 4096], ids=["one-delta", "4-chars", "4k"])
def test_a_long_run_without_spaces_is_handed_to_the_splitter_once(
    counting: type[CountingSplitter], piece: int
) -> None:
    """2 MB without a space or a sentence end, as one delta or many: the splitter is handed
    each character a bounded number of times and never holds more than twice the cap, and the
    whole text reaches the client unchanged."""
    size = 2 * MB if piece != 4 else MB // 4
    reply = "x" * size
    body = b"".join(chat_stream(reply, size=piece))
    guard = StreamGuard(CHAT, STACK_POLICIES, DISTRESS)
    out = b"".join(guard.feed(body[i : i + 65536]) for i in range(0, len(body), 65536))
    out += guard.close()
    assert released_text(out).startswith(reply)  # nothing lost; the referral follows
    assert counting.fed <= 3 * size  # before: about size * size / (2 * cap) for one delta
    assert counting.largest <= 2 * CAP


def test_a_long_run_without_spaces_through_the_proxy() -> None:
    """The same 2 MB run, one delta, through the real proxy under uvicorn: it all arrives."""
    reply = "y" * (2 * MB)
    with running() as proxy:
        proxy.send(CHAT, list(chat_stream(reply, size=len(reply))))
        response = post(proxy, CHAT, timeout=120)
    assert response.status_code == 200
    assert released_text(response.content).startswith(reply)


class CountingPattern:
    """Stands in for the splitter's boundary regex, counting match attempts."""

    def __init__(self, pattern: Any) -> None:
        self.pattern, self.attempts = pattern, 0

    def match(self, buf: str, at: int) -> Any:
        self.attempts += 1
        return self.pattern.match(buf, at)


@pytest.mark.slow
@pytest.mark.parametrize("run", [".", "\n", " \n", "!?", "\u2026"])
def test_a_run_of_terminators_or_line_breaks_costs_one_attempt(
    monkeypatch: pytest.MonkeyPatch, run: str
) -> None:
    """A reply that is one long run of dots or line breaks with nothing after it: each regex
    attempt walks the whole run, and there used to be one attempt per character (20 KB of dots:
    4.6 s, whole or streamed). Now a run that cannot end a sentence is tried once."""
    counter = CountingPattern(text_module._BOUNDARY)
    monkeypatch.setattr(text_module, "_BOUNDARY", counter)
    assert split_sentences("Tea" + run * 50_000) == ["Tea" + run * 50_000]
    assert counter.attempts <= 2
    splitter = SentenceSplitter()
    for _ in range(2_000):  # streamed: each piece scans only what is new
        assert splitter.feed(run) == []
    assert counter.attempts <= 2 + 2 * 2_000


def _cpu(text: str) -> float:
    started = time.process_time()
    split_sentences(text)
    return time.process_time() - started


@pytest.mark.slow
def test_a_sentence_of_initials_is_split_in_linear_time() -> None:
    """``A. B. C. ...``: each period is a candidate that is no boundary (an initial), and each
    used to re-read the whole sentence so far. Compared by CPU time of this process at two sizes
    with a generous ratio (8x the input: linear is about 8x, quadratic 64x)."""
    small, large = "A. " * 20_000, "A. " * 160_000
    _cpu(small)  # warm up
    ratio = min(_cpu(large) for _ in range(2)) / max(min(_cpu(small) for _ in range(3)), 1e-4)
    assert ratio < 24


def iter_pieces(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


def test_the_splitter_resumes_its_scan_where_it_stopped() -> None:
    """Fed one character at a time, a long sentence is scanned once, not once per piece."""
    splitter = SentenceSplitter()
    for piece in iter_pieces("word" * 5_000, 1):
        splitter.feed(piece)
        assert splitter._scan == len(splitter._buf)  # nothing left to scan again
