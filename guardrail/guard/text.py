"""``TextGuard``: guard one reply that arrives as a stream of text pieces.

This is the library API for streamed text (the proxy's stream pump is built on it)::

    guard = TextGuard(policyset, conversation, holdback="sentence")
    for piece in pieces:                 # as the model produces them
        send(guard.feed(piece))          # what may be released now ("" while held)
    result = guard.finish()              # once, when the reply is complete
    send(result.tail + result.append)    # the held rest, then the end-of-reply texts

When each stage runs and what it guarantees:

* construction (before the first token): the policy set's context detectors run once. In
  ``sentence`` mode, enforce-mode policies whose condition reads no reply detector
  (``Policy.needs_reply`` false) are decided here, since the reply cannot change them: their
  ``prepend`` texts are released in front of the reply with the first ``feed``, and a ``block``
  among them blocks the reply before any of it is released. (Deciding them takes a second,
  empty-reply scan of the context, done only when the policy set has such policies.)
* ``feed(piece)`` -> text to release now. ``none``: the piece itself (annotate only).
  ``sentence``: every sentence the piece completes, after the sentence-scoped actions (remove,
  replace) were applied to it; the current unfinished sentence is held back, never more than
  ``max_holdback_chars`` of it (see below). ``full``: nothing.
* ``release()`` -> the held text, now (a segment of the reply ends, e.g. a content block closes;
  the held rest is judged as a complete sentence, so a sentence split across two segments is
  judged as two). Not needed for replies of one segment.
* ``finish()`` -> :class:`GuardResult`: ``tail`` to release right after everything released so
  far, then ``append``, the end-of-reply texts (with their leading blank line).

Guarantees, by holdback mode (``released`` is everything ``feed``/``release`` returned):

``full``
    ``tail`` is exactly ``policyset.evaluate(conversation, reply).reply`` (prepends in place,
    block applied) and ``verdict`` is that verdict; ``append`` is empty. Memory grows with the
    reply, by design.
``sentence``
    A removed or replaced sentence is never released. The final text
    ``released + tail + append`` equals ``evaluate(...).reply`` whenever (a) no sentence grew past
    ``max_holdback_chars`` (a longer "sentence" is cut at its last space before the cap and each
    part judged as a sentence, which can change a sentence-scoped match only across that cut),
    (b) every enforced prepend was decided before the first token, and no such early prepend has
    an ``unless`` that the whole reply makes true (it is released before the reply is known: a
    crisis line leads even a reply that turns out to open with one), and (c) no policy that reads
    the reply blocked it; apart from that, leading whitespace of a reply is kept when end texts
    are added (it was already released, where ``evaluate`` strips it). The verdict is the one
    ``evaluate`` gives, except ``reply``, which holds only the end-of-reply texts (the scan keeps
    no reply text: memory is the holdback window and a few counters, whatever the reply's length).

    Prepend: text already released cannot be preceded, so a prepend that depends on the reply
    (decided only at its end) comes first among the end texts, at the end of the reply, and is
    reported in ``GuardResult.prepend``. A prepend decided by the conversation alone (e.g. "the
    user is in crisis: lead with the crisis line") is sent before the first word of the reply,
    with no added wait: a person in crisis sees the resources first, as with a buffered reply,
    even when the model is slow to start or stalls (``guardrail.guard.lead`` says why it does not
    wait for the reply's opening to decide an ``unless``). Routes where every prepend must lead
    whatever triggers it should use ``full``.

    Block: a block decided by the conversation alone suppresses the whole reply (the block text
    is released with the first ``feed``, or by ``finish`` if nothing was fed; the reply is then
    not read, so the verdict is the one of an empty reply). A block that depends on the reply is known only at its end: the held tail is
    suppressed and the block text appended; sentences released earlier stay with the user. To stop
    a sentence from ever reaching the user, use a sentence action (remove/replace) or ``full``.
``none``
    Every piece is released unchanged at once; the verdict is ``evaluate``'s (the sentences are
    still scanned). End texts, including what would be prepended and a block text, are appended.

An exception inside the engine never loses text: the guard releases what it held unchanged,
passes every later piece through as is, and ``finish`` reports the exception type in ``error``
with ``verdict`` None. The guard does no I/O and logs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

from guardrail.guard.lead import Lead
from guardrail.policy import Conversation, PolicySet, SentenceSplitter, Verdict
from guardrail.policy.engine import Scan
from guardrail.policy.facts import Facts
from guardrail.policy.model import EndTexts
from guardrail.policy.rewrite import SEPARATOR

__all__ = [
    "DEFAULT_MAX_HOLDBACK_CHARS",
    "HOLDBACK_MODES",
    "GuardResult",
    "Holdback",
    "TextGuard",
    "check_holdback",
]

Holdback = Literal["sentence", "none", "full"]
HOLDBACK_MODES: tuple[str, ...] = get_args(Holdback)
DEFAULT_MAX_HOLDBACK_CHARS = 1000
"""Cap of the held unfinished sentence; ordinary sentences are far shorter."""

_T = TypeVar("_T")
_LAST_SPACE = re.compile(r"\s+(?=\S*\Z)")


@dataclass(frozen=True, slots=True)
class GuardResult:
    """What ``TextGuard.finish`` decided.

    ``tail``: release right after the text released so far (the held rest, rewritten; in ``full``
    mode the whole final reply). ``append``: end-of-reply texts to release after ``tail``,
    starting with a blank line when text precedes them ("" if none). ``prepend``: the part of
    ``append`` that policies meant to put in front of the reply but could not, because the reply
    was already released (it leads ``append``; "" if none). ``verdict``: the engine's verdict
    (None after an engine error, then ``error`` names the exception type).
    """

    tail: str
    append: str
    prepend: str
    verdict: Verdict | None
    error: str | None = None


def check_holdback(holdback: str, max_holdback_chars: int) -> None:
    """Raise ValueError unless ``holdback`` is a mode and ``max_holdback_chars`` at least 1."""
    if holdback not in HOLDBACK_MODES:
        raise ValueError(f"holdback must be one of {', '.join(HOLDBACK_MODES)}, not {holdback!r}")
    if max_holdback_chars < 1:
        raise ValueError("max_holdback_chars must be at least 1")


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _cut(text: str, cap: int) -> int:
    """Where to cut an over-long held text: after its last whitespace before ``cap``."""
    m = _LAST_SPACE.search(text, 0, cap)
    return m.end() if m is not None and m.start() > 0 else cap


class TextGuard:
    """Guard one reply fed in pieces. Per-reply state only; see the module docstring."""

    def __init__(
        self,
        policyset: PolicySet,
        conversation: Conversation,
        *,
        locale: str | None = None,
        holdback: Holdback = "sentence",
        max_holdback_chars: int = DEFAULT_MAX_HOLDBACK_CHARS,
        facts: Facts | None = None,
    ) -> None:
        check_holdback(holdback, max_holdback_chars)
        self.holdback: Holdback = holdback
        self._ps = policyset
        self._facts = facts
        self._conv = conversation
        self._locale = locale
        self._cap = max_holdback_chars
        self._splitter = SentenceSplitter()
        self._held = 0  # characters inside the splitter
        self._ws = ""  # released trailing whitespace, sent with the next text (sentence mode)
        self._pieces: list[str] = []  # full mode only
        self._body = False  # non-whitespace reply text released
        self._lead = ""  # early prepends, not yet released
        self._led: tuple[str, ...] = ()  # early prepends released
        self._early: tuple[Verdict, str] | None = None  # the conversation alone blocks: why, text
        self._early_sent = False
        self._error: str | None = None
        self._result: GuardResult | None = None
        self._scan: Scan | None = None
        if holdback != "full":
            self._scan = self._guarded(
                lambda: policyset.start(conversation, locale, keep_text=False, facts=facts), None
            )
            if holdback == "sentence" and self._scan is not None:
                self._guarded(self._decide_early, None)

    # ------------------------------------------------------------------ construction
    def _decide_early(self) -> None:
        """Decide the policies the reply cannot change (sentence mode): prepends and blocks."""
        lead = Lead(self._ps, self._conv, self._locale, self._facts)
        self._early = lead.block
        self._led = lead.texts
        self._lead = SEPARATOR.join(self._led)

    # ------------------------------------------------------------------ feeding
    def feed(self, piece: str) -> str:
        """Add the next piece of the reply; return the text that may be released now."""
        if self._result is not None:
            raise RuntimeError("feed() after finish()")
        if not piece:
            return ""
        if self.holdback == "full":
            self._pieces.append(piece)
            return ""
        if self._error is not None:
            return self._unheld() + piece
        if self._early is not None:
            return self._early_block()
        lead = self._take_lead()
        if self.holdback == "none":
            self._body = self._body or not piece.isspace()
            self._scan_text(piece)
            return lead + piece
        return lead + "".join(self._emit(out) for out in self._scan_text(piece))

    def release(self) -> str:
        """Release the held text now (end of a segment): it is judged as a whole sentence."""
        if self._result is not None or self.holdback == "full" or self._early is not None:
            return ""
        if self._error is not None:
            return self._unheld()
        lead = self._take_lead()
        rest = self._splitter.flush()
        self._held = 0
        if self.holdback == "none":
            if rest:
                self._sentence(rest)
            return lead
        out = "".join(self._emit(o) for o in ([self._sentence(rest)] if rest else []))
        return lead + out + self._spill_ws(force=True)

    def _unheld(self) -> str:
        """After an engine failure: everything held, unchanged."""
        rest = self._splitter.flush()  # in none mode, already released
        held = self._take_lead() + self._ws + ("" if self.holdback == "none" else rest)
        self._ws, self._held = "", 0
        return held

    def _take_lead(self) -> str:
        lead, self._lead = self._lead, ""
        return lead

    def _early_block(self) -> str:
        if self._early_sent or self._early is None:
            return ""
        self._early_sent = True
        return self._early[1]

    def _scan_text(self, text: str) -> list[str]:
        """Feed the splitter at most ``max_holdback_chars`` characters at a time, so what it
        holds (and what an over-long sentence's cut feeds it again) stays under twice the cap
        however long the piece: linear time for any input, spaces or not. Re-feeding the rest of
        a long piece after each cut was quadratic (10 MB without a space: minutes of CPU)."""
        cap = self._cap
        if len(text) <= cap:
            return self._scan_slice(text)
        slices = (text[at : at + cap] for at in range(0, len(text), cap))
        return [out for piece in slices for out in self._scan_slice(piece)]

    def _scan_slice(self, text: str) -> list[str]:
        """Feed the splitter; scan the sentences it completes; cut an over-long held sentence."""
        done = self._splitter.feed(text)
        self._held += len(text) - sum(map(len, done))
        out = [self._sentence(s) for s in done]
        while self._held > self._cap:
            rest = self._splitter.flush()
            cut = _cut(rest, self._cap)
            out.append(self._sentence(rest[:cut]))
            done = self._splitter.feed(rest[cut:])
            self._held = len(rest) - cut - sum(map(len, done))
            out += [self._sentence(s) for s in done]
        return out

    def _sentence(self, sentence: str) -> str:
        """One sentence through the engine (unchanged once the engine has failed)."""
        scan = self._scan
        if self._error is not None or scan is None:
            return sentence
        return self._guarded(lambda: scan.feed_sentence(sentence), sentence)

    def _emit(self, text: str) -> str:
        """Released sentence text -> what to send: trailing whitespace waits for more text, so
        end texts can replace it with their blank line; a leading prepend gets its blank line."""
        core = text.rstrip()
        if not core:
            self._ws += text
            return self._spill_ws(force=False)
        head = self._ws
        if not self._body:
            self._body = True
            if self._led:  # like ``assemble``: prepends, blank line, the reply stripped
                head, core = SEPARATOR, core.lstrip()
        self._ws = text[len(text.rstrip()) :]
        return head + core

    def _spill_ws(self, *, force: bool) -> str:
        if not self._ws or not (force or len(self._ws) > self._cap):
            return ""
        ws, self._ws = self._ws, ""
        return "" if self._led and not self._body else ws

    # ------------------------------------------------------------------ finishing
    def finish(self) -> GuardResult:
        """The end of the reply: judge the held rest, run the end-of-reply policies. Idempotent."""
        if self._result is None:
            self._result = self._finish()
        return self._result

    def _finish(self) -> GuardResult:
        if self.holdback == "full":
            reply = "".join(self._pieces)
            self._pieces = []
            verdict = self._guarded(
                lambda: self._ps.evaluate(
                    self._conv, reply, locale=self._locale, facts=self._facts
                ),
                None,
            )
            if verdict is None:
                return GuardResult(reply, "", "", None, self._error)
            return GuardResult(verdict.reply, "", "", verdict)
        if self._early is not None:
            return GuardResult(self._early_block(), "", "", self._early[0])
        released = self._body or bool(self._led)  # before the tail: a block suppresses it
        tail = self.release()
        scan = self._scan
        verdict = (
            None if self._error is not None or scan is None else self._guarded(scan.finish, None)
        )
        if verdict is None:
            return GuardResult(tail + self._spill_ws(force=True), "", "", None, self._error)
        assert scan is not None
        return self._end_texts(tail, verdict, scan.end_texts, released)

    def _end_texts(
        self, tail: str, verdict: Verdict, texts: EndTexts, released: bool
    ) -> GuardResult:
        sent = self._body or bool(self._led)
        if verdict.blocked:  # too late to hold anything back but the tail
            self._ws = ""
            block = texts.block or ""
            return GuardResult("", (SEPARATOR if released else "") + block, "", verdict)
        late = [t for t in _unique(texts.prepends) if t not in self._led]
        ends = late + _unique(texts.appends)
        if not ends and not self._led:
            return GuardResult(tail + self._spill_ws(force=True), "", "", verdict)
        # like ``assemble``: with end texts around it, the reply's trailing whitespace goes
        self._ws = ""
        tail = tail.rstrip() if self.holdback == "sentence" else tail
        append = (SEPARATOR if sent and ends else "") + SEPARATOR.join(ends)
        return GuardResult(tail, append, SEPARATOR.join(late), verdict)

    # ------------------------------------------------------------------ failure
    def _guarded(self, call: Callable[[], _T], fallback: _T) -> _T:
        """Run an engine call; on an exception, switch to pass-through (fail open)."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 -- an engine bug must never lose the reply
            self._error = self._error or type(exc).__name__
            return fallback

    @property
    def error(self) -> str | None:
        """The type of the engine exception that switched this guard to pass-through, if any."""
        return self._error
