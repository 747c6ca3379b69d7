"""Text handling shared by every stage: normalisation and incremental sentence splitting.

``normalise`` runs once per scoped text (a message, a reply sentence) before any detector sees it.
It guarantees that the result has exactly the same length as the input, so a match span found in
the normalised text is also a span of the original text (evidence never stores text, only spans).

``SentenceSplitter`` is a pure incremental state machine: ``feed(text)`` returns the sentences that
are complete so far, ``flush()`` returns whatever is left. Whatever way a reply is cut into pieces,
the sentences it yields are the same, and joining them reproduces the fed text exactly (whitespace
after a sentence belongs to that sentence). That is what makes streamed and whole replies give the
same verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["SentenceSplitter", "normalise", "split_sentences"]

# Curly and look-alike apostrophes become "'"; curly double quotes become '"'.
_TABLE = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\uff07": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        # non-ASCII letters that IGNORECASE matches to ASCII ones (keeps prefilters sound)
        "\u0130": "i",
        "\u0131": "i",
        "\u017f": "s",
        "\u212a": "k",
    }
)

_MAP = {chr(code): str(to) for code, to in _TABLE.items()}
_MAPPED = re.compile("[" + re.escape("".join(_MAP)) + "]")


def normalise(text: str) -> str:
    """Lower-case ``text`` and unify apostrophes and double quotes, keeping its length.

    ``str.lower`` is used rather than ``casefold`` because casefold changes lengths
    (``ß`` -> ``ss``); the rare characters whose lower-case form is longer are left as they are.
    """
    if text.isascii():  # nothing to translate (the table maps non-ASCII characters only)
        return text.lower()
    # what text.translate(_TABLE) gives, found by one regex scan instead of a dict lookup per
    # character: each mapped character becomes one ASCII character, so replacing them one kind
    # at a time cannot create or hide another
    out = text
    for ch in set(_MAPPED.findall(text)):
        out = out.replace(ch, _MAP[ch])
    out = out.lower()
    if len(out) == len(text):
        return out
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text.translate(_TABLE))


# A sentence ends after a run of terminators (plus closing quotes/brackets) followed by
# whitespace, or at a line break. The lookahead for a non-space character means a boundary is only
# decided once the whole whitespace run and the next character are known.
_CLOSERS = "\"'\u201d\u2019)]*_"  # closing quotes and brackets, markdown emphasis
_BOUNDARY = re.compile(rf"[.!?\u2026]+[{re.escape(_CLOSERS)}]*\s+(?=\S)|[ \t\r\f\v]*\n\s*(?=\S)")
_CANDIDATE = re.compile(r"[.!?\u2026\n]")
"""The characters a boundary can begin at, or (a line break) end its leading blanks at."""
_BLANKS = " \t\r\f\v"
_SAME_FATE = re.compile(r"[.!?\u2026]+|\s+")
"""From a candidate that failed: the run whose other candidates fail too."""
_TAIL_CHARS = frozenset(".!?\u2026" + _CLOSERS + " \t\r\n\f\v")
_ABBREVIATIONS = frozenset(
    {
        "e.g.",
        "i.e.",
        "dr.",
        "mr.",
        "mrs.",
        "ms.",
        "mx.",
        "prof.",
        "st.",
        "vs.",
        "cf.",
        "approx.",
        "jr.",
        "sr.",
        "fig.",
        "vol.",
        "pp.",
    }
)
_LEADING_PUNCT = "\"'(\u201c\u2018[*_"
_PLAIN = max(max(map(len, _ABBREVIATIONS)), 4)
_PLAIN_WORD = re.compile(rf"[^\s{re.escape(_LEADING_PUNCT)}]{{{_PLAIN}}}")
"""``_PLAIN`` characters, none a space or leading punctuation: the last ones of a word that,
once its leading punctuation is stripped, is longer than any abbreviation (with its period),
than an initial and than a list number."""


def _matches(buf: str, pos: int) -> Iterator[re.Match[str]]:
    """``_BOUNDARY.finditer(buf, pos)``, without trying the regex at every position.

    A match can only start at a terminator (first branch) or at the first of the blanks right
    before a line break (second branch, never before ``pos``): the candidates come from a fast
    character scan and are tried in order, so the first that matches is the leftmost match, and
    the search goes on after it, as ``finditer`` does (no match is empty). When a candidate fails,
    so does every other candidate in its run of terminators (the same suffix follows) or of
    whitespace (it failed because the run ends the buffer): they are skipped, so a run costs one
    attempt, not one per character (which was quadratic in the run's length).
    """
    while (c := _CANDIDATE.search(buf, pos)) is not None:
        at = c.start()
        if buf[at] == "\n":
            while at > pos and buf[at - 1] in _BLANKS:
                at -= 1
        m = _BOUNDARY.match(buf, at)
        if m is not None:
            yield m
            pos = m.end()
        else:
            pos = _SAME_FATE.match(buf, c.start()).end()  # type: ignore[union-attr]


def _soft_wrap(buf: str, m: re.Match[str]) -> bool:
    """A single line break inside a sentence: a word (or a comma) before it, no sentence mark,
    and a lower-case word after it ("I will always be\nhere"). Read as a space, so a reply cannot
    hide a sentence from the detectors by wrapping it; a blank line, a list item, a capital or a
    sentence mark still ends the sentence."""
    piece = m.group()
    if piece.count("\n") != 1 or piece.strip(" \t\n") or m.end() >= len(buf):
        return False
    before = buf[m.start() - 1] if m.start() > 0 else ""
    return (before.isalnum() or before == ",") and buf[m.end()].islower()


def _is_boundary(buf: str, start: int, m: re.Match[str]) -> bool:
    """Decide whether the candidate ``m`` (inside the sentence starting at ``start``) ends it."""
    piece = m.group()
    if "\n" in piece:
        return not _soft_wrap(buf, m)
    run = piece.rstrip()
    if run.rstrip(_CLOSERS)[-1:] in ("!", "?"):
        return True
    nxt = buf[m.end()]
    if nxt.islower():  # "e.g. you", "well... maybe", an unknown abbreviation
        return False
    if run != ".":  # the abbreviation and list-number exceptions below are for a lone period
        return True
    at = m.start()
    if at - start >= _PLAIN and _PLAIN_WORD.fullmatch(buf, at - _PLAIN, at):
        return True  # the word before the period is too long to be an exception below
    # the last word of buf[start:at], found from its end: the sentence is not read again for
    # each candidate (which was quadratic in a sentence of initials, "A. B. C. ...")
    end = at
    while end > start and buf[end - 1].isspace():
        end -= 1
    begin = end
    while begin > start and not buf[begin - 1].isspace():
        begin -= 1
    raw = buf[begin:end]
    word = raw.lstrip(_LEADING_PUNCT).lower()
    if word + "." in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return False
    # "1. " at the start of a numbered list item is no boundary
    return not (
        word.isdigit() and len(word) <= 3 and word == raw and not buf[start:begin].strip()
    )


class SentenceSplitter:
    """Incremental sentence splitter: ``feed(text) -> completed sentences``, ``flush() -> rest``.

    Boundaries: ``.``, ``!``, ``?``, ``…`` (and runs of them, with closing quotes or brackets)
    followed by whitespace, and line breaks. Not a boundary: a period after a known abbreviation
    (``e.g.``, ``Dr.``) or a single initial, a period or ellipsis followed by a lower-case word,
    a list number such as ``1.``, a decimal point (no whitespace follows it).
    """

    __slots__ = ("_buf", "_scan")

    def __init__(self) -> None:
        self._buf = ""
        self._scan = 0

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the sentences completed by it (possibly none)."""
        if not text:
            return []
        buf = self._buf + text
        out: list[str] = []
        start = 0
        for m in _matches(buf, self._scan):
            if _is_boundary(buf, start, m):
                out.append(buf[start : m.end()])
                start = m.end()
        rest = buf[start:]
        tail = len(rest)
        while tail > 0 and (rest[tail - 1] in _TAIL_CHARS or rest[tail - 1].isspace()):
            tail -= 1
        self._buf = rest
        # a candidate before ``tail`` has a character after it that no match can consume, so
        # whether it matches is settled: the next feed scans from ``tail`` on, never the whole
        # held text again (which made a long sentence fed in small pieces quadratic)
        self._scan = tail
        return out

    def flush(self) -> str:
        """Return the unfinished rest (``""`` if none) and reset the splitter."""
        rest, self._buf, self._scan = self._buf, "", 0
        return rest


def split_sentences(text: str) -> list[str]:
    """Split a whole text; ``"".join(split_sentences(t)) == t``."""
    splitter = SentenceSplitter()
    out = splitter.feed(text)
    rest = splitter.flush()
    if rest:
        out.append(rest)
    return out
