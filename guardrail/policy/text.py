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


def normalise(text: str) -> str:
    """Lower-case ``text`` and unify apostrophes and double quotes, keeping its length.

    ``str.lower`` is used rather than ``casefold`` because casefold changes lengths
    (``ß`` -> ``ss``); the rare characters whose lower-case form is longer are left as they are.
    """
    out = text.translate(_TABLE).lower()
    if len(out) == len(text):
        return out
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text.translate(_TABLE))


# A sentence ends after a run of terminators (plus closing quotes/brackets) followed by
# whitespace, or at a line break. The lookahead for a non-space character means a boundary is only
# decided once the whole whitespace run and the next character are known.
_CLOSERS = "\"'\u201d\u2019)]*_"  # closing quotes and brackets, markdown emphasis
_BOUNDARY = re.compile(rf"[.!?\u2026]+[{re.escape(_CLOSERS)}]*\s+(?=\S)|[ \t\r\f\v]*\n\s*(?=\S)")
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


def _is_boundary(buf: str, start: int, m: re.Match[str]) -> bool:
    """Decide whether the candidate ``m`` (inside the sentence starting at ``start``) ends it."""
    piece = m.group()
    if "\n" in piece:
        return True
    run = piece.rstrip()
    if run.rstrip(_CLOSERS)[-1:] in ("!", "?"):
        return True
    nxt = buf[m.end()]
    if nxt.islower():  # "e.g. you", "well... maybe", an unknown abbreviation
        return False
    before = buf[start : m.start()]
    word = before.rsplit(None, 1)[-1] if before.strip() else ""
    word = word.lstrip(_LEADING_PUNCT).lower()
    if run == "." and (word + "." in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
        return False
    # "1. " at the start of a numbered list item is no boundary
    return not (run == "." and word.isdigit() and before.strip() == word and len(word) <= 3)


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
        pos = self._scan
        while (m := _BOUNDARY.search(buf, pos)) is not None:
            if _is_boundary(buf, start, m):
                out.append(buf[start : m.end()])
                start = m.end()
            pos = m.end()
        rest = buf[start:]
        tail = len(rest)
        while tail > 0 and rest[tail - 1] in _TAIL_CHARS:
            tail -= 1
        self._buf = rest
        self._scan = min(max(pos - start, 0), tail)
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
