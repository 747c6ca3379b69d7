"""Compiled detectors: named matchers that each publish one boolean signal.

Everything is compiled once, at load: a detector's phrases (its own and those of the lists it
names) become ONE regular expression shaped like a trie (common prefixes shared, longest phrase
tried first), with whole-word boundaries, flexible whitespace and hyphens, matched against text
that ``reading.read`` has already normalised (NFKC, lower case, quotes unified, ...). Regexes
written in a policy are compiled with IGNORECASE beside it.

At request time ``Leaf.find(view)`` returns the spans that survive the detector's filters:

* ``unless_negated``: a negator (not, never, no, n't, cannot, no longer, ...) among the few words
  before the match, in the same clause;
* ``unless_hedged``: a contrast word (but, however, though, ...) after the match, in the same
  sentence ("it's not that you're wrong, but ...");
* ``unless_quoted``: the match sits inside double quotes (straight or curly) or a single-quoted
  span, as when a reply echoes the user's words back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from guardrail.policy.boundedregex import Matcher
from guardrail.policy.prefilter import LiteralScanner, necessary_literals
from guardrail.policy.reading import Reading, read

__all__ = [
    "CONTEXT_SCOPES",
    "DEFAULT_CONTRASTS",
    "DEFAULT_NEGATORS",
    "DIRECT_LITERALS",
    "REPLY_SCOPES",
    "SCOPES",
    "Composite",
    "Filters",
    "Leaf",
    "TextView",
    "phrase_pattern",
    "word_pattern",
]

CONTEXT_SCOPES = ("last_user", "user_turns", "assistant_turns", "system")
REPLY_SCOPES = ("reply", "sentence")
SCOPES = CONTEXT_SCOPES + REPLY_SCOPES

DEFAULT_NEGATORS = (
    "not",
    "never",
    "no",
    "cannot",
    "no longer",
    "nobody",
    "nothing",
    "none",
    "neither",
    "nor",
    "without",
    "hardly",
    "won't",
    "don't",
    "doesn't",
    "didn't",
    "can't",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "shouldn't",
    "wouldn't",
    "couldn't",
    "haven't",
    "hasn't",
    "needn't",
    "mustn't",
    "ain't",
    "nowhere",
    "not ever",
)
DEFAULT_CONTRASTS = (
    "but",
    "however",
    "though",
    "although",
    "yet",
    "that said",
    "having said that",
    "nevertheless",
    "nonetheless",
    "even so",
    "on the other hand",
    "still,",
)

# ------------------------------------------------------------------ phrase tries

_Trie = dict[str, "_Trie"]
_END = ""


def _char_pattern(ch: str) -> str:
    if ch == " ":
        return r"\s+"
    if ch == "-":
        return r"(?:-|\s+)?"
    return re.escape(ch)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _emit(node: _Trie, last: str) -> str:
    alts = [_char_pattern(ch) + _emit(node[ch], ch) for ch in sorted(node) if ch != _END]
    if _END in node:  # after the longer continuations: prefer the longest phrase
        alts.append(r"(?!\w)" if _is_word(last) else "")
    if len(alts) == 1:
        return alts[0]
    return "(?:" + "|".join(alts) + ")"


def phrase_key(phrase: str) -> str:
    """The normal form a phrase is matched in: whitespace collapsed, then read as text is
    (``reading.read``)."""
    return read(" ".join(phrase.split())).text


def phrase_pattern(phrases: Iterable[str]) -> str | None:
    """One trie-shaped regex for all ``phrases`` (None when there are none)."""
    trie: _Trie = {}
    for phrase in phrases:
        key = phrase_key(phrase)
        if not key:
            continue
        node = trie
        for ch in key:
            node = node.setdefault(ch, {})
        node[_END] = {}
    if not trie:
        return None
    word = {ch: sub for ch, sub in trie.items() if _is_word(ch)}
    other = {ch: sub for ch, sub in trie.items() if not _is_word(ch)}
    parts = []
    if word:
        parts.append(r"(?<!\w)" + _emit(word, ""))
    if other:
        parts.append(_emit(other, ""))
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def word_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """A compiled phrase trie, for the negator and contrast vocabularies."""
    pattern = phrase_pattern(words)
    return re.compile(pattern if pattern is not None else r"(?!x)x")


# ------------------------------------------------------------------ per-text view


_SINGLE_QUOTES = re.compile(r"(?<!\w)'(?=\S)[^\n]*?(?<=\S)'(?!\w)")
_SENTENCE_END = re.compile(r"[.!?\u2026](?=\s|$)|\n")
_CLAUSE_BREAK = re.compile(
    r"[,;:()\[\]\u2014\u2013.!?\u2026\n]|\s-\s"
    r"|\b(?:but|and|so|because|although|though|however|while|whereas)\b"
)
_WORDS = re.compile(r"[\w']+")
_WINDOW_CHARS = 80
DIRECT_LITERALS = 32  # up to this many prefilter literals, plain substring tests are cheaper


class TextView:
    """One normalised scoped text, with lazily computed quote spans and prefilter literals
    (per request, never shared).

    Double quotes pair up in order; ``in_quote`` says the text starts inside a quotation (a
    reply sentence after one that opened a quote and did not close it), and a quotation left
    open runs to the end of a reply sentence. With ``message`` (a whole conversation message),
    a quote mark never closed quotes nothing, and a quotation that wraps the entire message is
    no quotation: people sometimes put their own
    words in quotes, and there is nobody else's speech around it to set it apart from.
    """

    __slots__ = ("_in_quote", "_message", "_present", "_quotes", "_scanner", "flat", "norm",
                 "reading")

    def __init__(
        self,
        text: str,
        scanner: LiteralScanner | None = None,
        *,
        in_quote: bool = False,
        message: bool = False,
    ) -> None:
        self.reading: Reading | None = None
        if text.isascii():
            self.norm = text.lower()
            self.flat = self.norm.replace("\n", " ") if "\n" in text else self.norm
        # printable ASCII without runs of whitespace (the common case): reading only lower-cases
        if not (text.isascii() and self.flat.isprintable() and "  " not in self.flat):
            self.reading = read(text)
            self.norm = self.reading.text
            self.flat = self.reading.flat
        """``norm``: the text as read (``reading.read``), line breaks kept, what the filters look
        at; ``flat``: ``norm`` with line breaks as spaces (the same length), what patterns
        match; ``reading``: the map back to the original (None: the same indices)."""
        self._quotes: list[tuple[int, int]] | None = None
        self._scanner = scanner
        self._present: frozenset[str] | None = None
        self._in_quote = in_quote
        self._message = message

    @property
    def ends_in_quote(self) -> bool:
        """Whether a double-quoted passage is still open at the end of the text."""
        return self._in_quote != (self.norm.count('"') % 2 == 1)

    def _quote_spans(self) -> list[tuple[int, int]]:
        norm = self.norm
        spans: list[tuple[int, int]] = []
        opened = -1 if self._in_quote else None
        i = norm.find('"')
        while i >= 0:
            if opened is None:
                opened = i
            else:
                spans.append((opened, i))
                opened = None
            i = norm.find('"', i + 1)
        if opened is not None and not self._message:  # a reply sentence inside a quotation
            spans.append((opened, len(norm)))
        # in a whole message a quote mark never closed (a typo, an inch mark, a lone guillemet)
        # quotes nothing: it must not hide what the person goes on to say (issue 11)
        spans.extend(m.span() for m in _SINGLE_QUOTES.finditer(norm))
        if self._message and spans:
            first = len(norm) - len(norm.lstrip())
            last = len(norm.rstrip().rstrip(".!?…")) - 1
            spans = [(qs, qe) for qs, qe in spans if not (qs <= first and qe >= last)]
        return spans

    def present(self) -> frozenset[str] | None:
        """The scanner's literals occurring in the text (None: no scanner for this text)."""
        if self._present is None and self._scanner is not None:
            self._present = self._scanner.present(self.flat)
        return self._present

    def quoted(self, start: int, end: int) -> bool:
        if self._quotes is None:
            self._quotes = self._quote_spans()
        return any(qs < start and end <= qe for qs, qe in self._quotes)


@dataclass(frozen=True, slots=True)
class Filters:
    """The negator and contrast vocabularies (defaults plus the pack's ``negators`` and
    ``contrasts`` lists), compiled once per policy set."""

    negators: Matcher
    contrasts: Matcher

    def negated(self, norm: str, start: int) -> bool:
        window = norm[max(0, start - _WINDOW_CHARS) : start]
        cut = 0
        for m in _CLAUSE_BREAK.finditer(window):
            cut = m.end()
        words = _WORDS.findall(window[cut:])[-4:]
        if not words:
            return False
        tail = " ".join(words)
        return self.negators.search(tail) is not None or any(w.endswith("n't") for w in words)

    def hedged(self, norm: str, end: int) -> bool:
        stop = _SENTENCE_END.search(norm, end)
        rest = norm[end : stop.start() if stop else len(norm)]
        return self.contrasts.search(rest) is not None


# ------------------------------------------------------------------ detectors


@dataclass(frozen=True, slots=True)
class Leaf:
    """A detector that matches text in one scope.

    ``find`` returns ``(start, end, key)`` for each surviving match; ``key`` is the matched text
    with whitespace collapsed, so ``min_matches`` counts distinct matches ("great, great" is one).
    """

    name: str
    scope: str
    patterns: tuple[Matcher, ...]
    filters: Filters
    prefilters: tuple[tuple[str, ...] | None, ...] = ()
    _always: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)
    _by_literal: Mapping[str, tuple[int, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _literals: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    turns: int = 1
    unless_negated: bool = False
    unless_hedged: bool = False
    unless_quoted: bool = False
    min_matches: int = 1
    internal: bool = False
    description: str = ""
    first_sentences: int | None = None
    """Reply scopes only: match only in the reply's first N sentences (None: anywhere)."""
    construct: str = ""
    """The clinician's name for what the detector finds ("burdensomeness"); "" if none."""

    def __post_init__(self) -> None:
        if len(self.prefilters) != len(self.patterns):
            object.__setattr__(
                self,
                "prefilters",
                tuple(necessary_literals(p.pattern, p.flags) for p in self.patterns),
            )
        by_literal: dict[str, list[int]] = {}
        for i, needed in enumerate(self.prefilters):
            for lit in needed or ():
                by_literal.setdefault(lit, []).append(i)
        object.__setattr__(
            self, "_always", tuple(i for i, n in enumerate(self.prefilters) if n is None)
        )
        object.__setattr__(self, "_by_literal", {k: tuple(v) for k, v in by_literal.items()})
        object.__setattr__(self, "_literals", frozenset(by_literal))

    @property
    def literals(self) -> frozenset[str]:
        """Every prefilter literal of this detector (for the policy set's shared scanner)."""
        return self._literals

    def _candidates(self, view: TextView) -> Iterable[int]:
        """Indices of the patterns that may match: the prefilter rules out the others."""
        if not self._literals:
            return self._always
        present = view.present()
        if present is None:  # no shared scanner for this text: test the few literals directly
            flat = view.flat
            seen = [lit for lit in self._literals if lit in flat]
        else:
            seen = [lit for lit in self._literals.intersection(present)]
        if not seen:
            return self._always
        chosen = set(self._always)
        for lit in seen:
            chosen.update(self._by_literal[lit])
        return sorted(chosen)

    def may_match(self, view: TextView) -> bool:
        """False only when no pattern can match ``view`` (its prefilters rule all out)."""
        return bool(self._candidates(view))

    def find(
        self, view: TextView, chosen: Iterable[int] | None = None
    ) -> list[tuple[int, int, str]]:
        """The surviving matches: spans of the original text (``TextView.reading`` maps them
        back), keys read from the normalised text. ``chosen``: the indices of the patterns
        that may match, when the caller knows them (``leafindex.LeafIndex``); else the leaf's
        prefilters choose."""
        norm = view.norm
        found: list[tuple[int, int, str]] = []
        for i in self._candidates(view) if chosen is None else chosen:
            for m in self.patterns[i].finditer(view.flat):
                start, end = m.span()
                if self.unless_negated and self.filters.negated(norm, start):
                    continue
                if self.unless_hedged and self.filters.hedged(norm, end):
                    continue
                if self.unless_quoted and view.quoted(start, end):
                    continue
                found.append((start, end, " ".join(norm[start:end].split())))
        if view.reading is None or view.reading.starts is None:
            return found
        span = view.reading.span
        return [(*span(start, end), key) for start, end, key in found]

    @property
    def reads_reply(self) -> bool:
        return self.scope in REPLY_SCOPES

    @property
    def reach(self) -> int:
        """Context scopes: how many of the latest messages of its role the leaf reads."""
        if self.scope == "system":
            return 1 << 30
        return 1 if self.scope == "last_user" else self.turns


@dataclass(frozen=True, slots=True)
class Composite:
    """A detector composed of others.

    ``any`` (``any_of``): true when at least ``at_least`` parts are (default 1, so plain OR);
    ``all`` (``all_of``): true when every part is; ``none`` (``none_of``): true when no part is.
    With ``min_matches`` (``any_of`` over leaf detectors only) it counts instead: true when its
    parts matched at least that many distinct texts between them ("two affirmations, of any
    kind"); the scan, which keeps the counts, computes that value (``count_value``).
    """

    name: str
    parts: tuple[str, ...]
    mode: str  # "any" | "all" | "none"
    internal: bool = False
    description: str = ""
    at_least: int = 1
    min_matches: int = 0
    construct: str = ""
    """The clinician's name for what the detector finds; its leaf parts without one inherit it."""

    def count_value(self, counts: Mapping[str, int]) -> bool:
        """A counting composite's value from its parts' distinct-match counts."""
        return sum(counts[part] for part in self.parts) >= self.min_matches

    def value(self, signals: Mapping[str, bool]) -> bool:
        """Its value given its parts' (a KeyError when one is missing: a failed detector)."""
        count = 0
        for part in self.parts:
            if signals[part]:
                count += 1
        if self.mode == "any":
            return count >= self.at_least
        if self.mode == "all":
            return count == len(self.parts)
        return count == 0

    def python(self) -> str:
        """``value`` as a Python expression over ``s``: like ``value`` it reads every part, so a
        missing one raises ``KeyError`` just the same."""
        reads = [f"s[{part!r}]" for part in self.parts]
        if self.mode == "any" and self.at_least > 1:
            return f"({' + '.join(reads)} >= {self.at_least})"
        joined = "(" + (" & " if self.mode == "all" else " | ").join(reads) + ")"
        return f"(not {joined})" if self.mode == "none" else joined


Detector = Leaf | Composite
