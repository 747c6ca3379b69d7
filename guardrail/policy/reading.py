"""The text as a person reads it: what detectors match against, with a map back to the original.

``read(text) -> Reading`` runs once per scoped text (a message, a reply sentence), before any
detector sees it (issue 11, "evasion by formatting"):

1. Unicode compatibility normalisation (NFKC), one character and its combining marks at a time:
   fullwidth ``ｗａｎｔ``, mathematical ``𝐰𝐚𝐧𝐭`` and ligatures read as ``want``;
2. format characters (category Cf: zero-width space and joiners, soft hyphen, bidi controls,
   byte-order mark) and control characters other than whitespace (NUL, ...) are dropped:
   ``wa\\u200bnt`` reads ``want``;
3. every kind of whitespace reads as a space (no-break, ideographic, thin, ...), and every kind of
   line break (``\\r``, ``\\v``, ``\\f``, U+0085, U+2028, U+2029) as ``\\n``; a run of them reads
   as one (``\\n`` if it holds a line break: a CRLF, a blank line, a double space are one break or
   space); ``Reading.flat`` then reads line breaks as spaces too, so ``I want to\\ndie`` is matched
   as ``i want to die`` while filters that care about lines and clauses (negation, quotes) still
   see them;
4. lower case, curly quotes and apostrophes unified (``text.normalise``);
5. a lone surrogate (half an emoji) reads as U+FFFD;
6. confusable characters (Unicode's confusables data, as shipped by ``confusable-homoglyphs``)
   are folded to the ASCII letters they imitate, but only inside words that already hold an ASCII
   letter (``wаnt`` with a Cyrillic ``а``) or, in a text whose letters are mostly ASCII, words
   made only of look-alikes. A Russian or Greek message keeps its letters: it is not folded into
   gibberish that could match English phrases by accident.

Steps 1 to 3 change lengths, so a ``Reading`` keeps, for a text that needed them, the index in
the original of each character of the reading; ``span`` maps a match back, and a span cut from
the original covers exactly the characters the match was read from (a dropped zero-width space
inside it included). Printable ASCII text, the common case, is only lower-cased: no map.
"""

from __future__ import annotations

import functools
import importlib
import re
import unicodedata
from collections.abc import Mapping
from typing import NamedTuple

from guardrail.policy.text import normalise

__all__ = ["Reading", "plain", "prepare", "read"]

_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_SPECIAL = re.compile(r"[^\x20-\x7e\n]+")
"""Runs of what printable ASCII text does not hold: non-ASCII characters, controls, tabs."""
_WS_RUN = re.compile(r"[ \n]{2,}")
_SPECIAL_CHAR = re.compile(r"[^\x20-\x7e\n]")
_PLAIN_WORD = re.compile(r"[^\W\d_]*[^\x00-\x7f][^\W\d_]*")
"""A word holding a non-ASCII letter (confusable folding looks only at those)."""


class Reading(NamedTuple):
    """A text as read (``text``) and where each of its characters came from (``starts``: the
    index in the original of each character of ``text``; None when they are the same)."""

    text: str
    starts: tuple[int, ...] | None
    length: int
    """The original text's length."""

    @property
    def flat(self) -> str:
        """``text`` with line breaks read as spaces (the same length): what patterns match."""
        return self.text.replace("\n", " ") if "\n" in self.text else self.text

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original that ``text[start:end]`` was read from."""
        starts = self.starts
        if starts is None:
            return start, end
        n = len(starts)
        first = starts[start] if start < n else self.length
        if end <= start:
            return first, first
        last = starts[end - 1]
        # the end is where the next character read from elsewhere begins (a character that
        # reads as several, like "…" as "...", is cut whole)
        while end < n and starts[end] == last:
            end += 1
        return first, (starts[end] if end < n else self.length)


def plain(text: str) -> bool:
    """Whether ``text`` is printable ASCII and single line feeds or spaces, which ``read`` only
    lower-cases (the common case, told in a few string scans)."""
    if not text.isascii():
        return False
    flat = text.replace("\n", " ") if "\n" in text else text
    return flat.isprintable() and "  " not in flat


def read(text: str) -> Reading:
    """``text`` as a person reads it (see the module docstring)."""
    if plain(text):
        return Reading(text.lower(), None, len(text))
    out, starts = _read(text)
    if _WS_RUN.search(out) is None:
        return Reading(out, starts, len(text))
    return _collapse(out, starts, len(text))


def _collapse(text: str, starts: tuple[int, ...] | None, length: int) -> Reading:
    """Each run of spaces and line breaks in ``text`` read as one (a line break if it holds
    one), so a phrase matches across a double space, a blank line or a CRLF."""
    if starts is None:
        starts = tuple(range(len(text)))
    pieces: list[str] = []
    kept: list[int] = []
    pos = 0
    for m in _WS_RUN.finditer(text):
        s, e = m.span()
        pieces.append(text[pos:s])
        kept.extend(starts[pos:s])
        pieces.append("\n" if "\n" in m.group() else " ")
        kept.append(starts[s])
        pos = e
    pieces.append(text[pos:])
    kept.extend(starts[pos:])
    return Reading("".join(pieces), tuple(kept), length)


def _read(text: str) -> tuple[str, tuple[int, ...] | None]:
    """Steps 1 to 6 of the module docstring: the reading and its map (None: the same indices)."""
    chars = set(_SPECIAL_CHAR.findall(text))  # the few characters that may need reading
    if unicodedata.is_normalized("NFKC", text) and _odd().isdisjoint(chars):
        return _fold(normalise(text), chars), None  # no length changes
    parts: list[str] = []
    starts: list[int] = []
    exact = True  # every character read as one: the reading's indices are the original's
    pos = 0
    for m in _SPECIAL.finditer(text):
        s, e = m.span()
        if s > pos and unicodedata.combining(text[s]):
            s -= 1  # a mark on an ASCII letter: read them together ("e" + U+0301 is "é")
        if s > pos:
            parts.append(text[pos:s])
            starts.extend(range(pos, s))
        exact = _read_run(text, max(s, pos), e, parts, starts) and exact
        pos = e
    if pos < len(text):
        parts.append(text[pos:])
        starts.extend(range(pos, len(text)))
    joined = "".join(parts)
    out = _fold(normalise(joined), set(_SPECIAL_CHAR.findall(joined)))
    return out, None if exact else tuple(starts)


def prepare() -> None:
    """Build the tables ``read`` needs for non-ASCII text now (at load) rather than on the first
    request that holds some: about 80 ms, once per process."""
    _odd()
    _confusables()


def _read_run(text: str, s: int, e: int, parts: list[str], starts: list[int]) -> bool:
    """Read ``text[s:e]`` (no printable ASCII but a base letter before a mark) into ``parts``;
    whether every character was read as exactly one."""
    run = text[s:e]
    if unicodedata.is_normalized("NFKC", run) and _odd().isdisjoint(run):
        parts.append(run)  # nothing to change (a curly quote, an emoji, a word in Greek)
        starts.extend(range(s, e))
        return True
    exact = True
    i = s
    while i < e:
        j = i + 1
        while j < e and unicodedata.combining(text[j]):
            j += 1
        out = _read_cluster(text[i:j])
        parts.append(out)
        starts.extend([i] * len(out))
        exact = exact and len(out) == j - i == 1
        i = j
    return exact


def _read_cluster(cluster: str) -> str:
    """One character with its combining marks, as read."""
    ch = cluster[0]
    if len(cluster) == 1:
        if ch in _LINE_BREAKS:
            return "\n"
        if ch.isspace():
            return " "
        category = unicodedata.category(ch)
        if category == "Cs":
            return "\ufffd"
        if category in ("Cf", "Cc"):
            return ""
    return unicodedata.normalize("NFKC", cluster)


@functools.cache
def _odd() -> frozenset[str]:
    """Characters ``_read_cluster`` changes even in NFKC text: controls, format characters,
    whitespace other than the ASCII space and line feed, surrogates (built once, ~30 ms)."""
    odd = {chr(code) for code in range(0xD800, 0xE000)}
    for plane in (range(0xD800), range(0xE000, 0x20000), range(0xE0000, 0xE1000)):
        for code in plane:
            ch = chr(code)
            if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
                odd.add(ch)
    odd.difference_update(" \n")
    return frozenset(odd)


# ------------------------------------------------------------------ confusables


@functools.cache
def _confusables() -> Mapping[str, str]:
    """Non-ASCII character -> the lower-case ASCII letter or digit it imitates, from Unicode's
    confusables data (``confusable-homoglyphs`` ships it as JSON; read once, on first need).
    A character that imitates several picks a letter before a digit, then the first."""
    # the package ships no type hints; imported on first need (loading its data takes ~50 ms)
    data: Mapping[str, list[Mapping[str, str]]] = importlib.import_module(
        "confusable_homoglyphs.confusables"
    ).confusables_data
    table: dict[str, str] = {}
    for source, homoglyphs in data.items():
        if len(source) != 1 or source.isascii():
            continue
        targets = sorted(
            {h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii()
             and h["c"].isalnum()},
            key=lambda c: (not c.islower(), not c.isalpha(), c),
        )
        if targets:
            table[source] = targets[0].lower()
    return table


def _fold(text: str, chars: set[str]) -> str:
    """Fold look-alike letters in words that are (or sit among text that is) Latin; ``chars``:
    the non-ASCII characters of ``text`` before it was lower-cased (to tell quickly that there
    is nothing to fold: the data lists upper- and lower-case look-alikes alike)."""
    table = _confusables()
    if table.keys().isdisjoint(chars):
        return text
    mostly_latin: bool | None = None
    pieces: list[str] = []
    pos = 0
    for m in _PLAIN_WORD.finditer(text):
        word = m.group()
        if not any(ch in table for ch in word):
            continue
        if not any("a" <= ch <= "z" for ch in word):
            if mostly_latin is None:
                mostly_latin = _mostly_latin(text)
            if not (mostly_latin and all(ch.isascii() or ch in table for ch in word)):
                continue
        pieces.append(text[pos : m.start()])
        pieces.append("".join(table.get(ch, ch) for ch in word))
        pos = m.end()
    if not pieces:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def _mostly_latin(text: str) -> bool:
    ascii_letters = sum(1 for ch in text if "a" <= ch <= "z")
    others = sum(1 for ch in text if ch.isalpha() and not ch.isascii())
    return ascii_letters > others
