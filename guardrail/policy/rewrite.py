"""Turning enforce-mode hits into the text the user receives.

Pure functions over strings, called by the scanner:

* ``choose_variant``: which of a text's variants to use. Deterministic for the same input: it
  starts at an offset derived from the conversation length and the policy id, and skips variants
  the assistant already said earlier in the conversation, so a long chat does not repeat one line.
* ``replace_sentence``: swap a sentence's words, keeping its surrounding whitespace, so the reply
  keeps its layout.
* ``assemble``: the end-of-reply order. A block wins outright; otherwise prepends (most severe
  first), then the body, then appends (most severe first), each distinct text once, joined with
  a blank line.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Mapping, Sequence

from guardrail.policy.text import normalise

__all__ = [
    "GENERIC_BLOCK_TEXT",
    "EarlierTurns",
    "assemble",
    "choose_variant",
    "replace_sentence",
    "safe_text",
]

GENERIC_BLOCK_TEXT = (
    "I'm sorry, I can't share that reply right now. If you're going through something hard, "
    "please consider reaching out to someone you trust or to a local support line."
)
_RESOURCE_BLOCK_TEXT = (
    "I'm sorry, I can't share that reply right now. If you're going through something hard, "
    "you can reach {crisis_line}: {crisis_contact}. In an emergency, call {emergency}."
)
_RESOURCE_KEYS = ("crisis_line", "crisis_contact", "emergency")


def safe_text(resources: Mapping[str, str]) -> str:
    """The generic text a policy failing closed without texts of its own puts in the reply's
    place: with the locale's crisis line and emergency number when the policy set defines them
    (a failure must never leave a person in crisis without them), else ``GENERIC_BLOCK_TEXT``."""
    if all(resources.get(key) for key in _RESOURCE_KEYS):
        return _RESOURCE_BLOCK_TEXT.format_map(resources)
    return GENERIC_BLOCK_TEXT
SEPARATOR = "\n\n"


@functools.lru_cache(maxsize=4096)
def _variant_key(text: str) -> str:
    """A policy text as ``choose_variant`` looks for it (policy texts only: a bounded set)."""
    return " ".join(normalise(text).split())


class EarlierTurns:
    """The assistant's earlier turns, for ``choose_variant``: each normalised once, and
    whitespace-collapsed only when it could hold the text looked for."""

    __slots__ = ("_collapsed", "_texts")

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = [normalise(text) for text in texts]
        self._collapsed: dict[int, str] = {}

    def said(self, key: str) -> bool:
        """Whether ``key`` (normalised, whitespace collapsed) occurs in a collapsed turn."""
        first = key.split(" ", 1)[0]  # no whitespace in it: collapsing cannot make it appear
        for i, text in enumerate(self._texts):
            if first not in text:
                continue
            collapsed = self._collapsed.get(i)
            if collapsed is None:
                collapsed = self._collapsed[i] = " ".join(text.split())
            if key in collapsed:
                return True
        return False


def choose_variant(
    variants: Sequence[str],
    policy_id: str,
    turns: int,
    earlier: Sequence[str] | EarlierTurns,
    salt: str = "",
) -> str:
    """Pick a variant: from offset ``(turns + crc32(policy_id, salt)) % n``, the first whose
    text (normalised) does not occur in any of the ``earlier`` normalised assistant turns
    (whitespace-collapsed strings, or an ``EarlierTurns``).

    ``salt`` is the latest user message (normalised): the choice then changes from turn to turn
    of one conversation with what the person wrote, not only with the conversation's length,
    while the same input still always gives the same text.
    """
    n = len(variants)
    if n == 1:
        return variants[0]
    # surrogatepass: a lone surrogate in what the person wrote (half an emoji, a JSON "\\ud800")
    # must not make the choice raise, which would drop the text (issue 11)
    start = (turns + zlib.crc32(f"{policy_id}\0{salt}".encode("utf-8", "surrogatepass"))) % n
    for k in range(n):
        candidate = variants[(start + k) % n]
        key = _variant_key(candidate)
        if isinstance(earlier, EarlierTurns):
            said = earlier.said(key)
        else:
            said = any(key in turn for turn in earlier)
        if not said:
            return candidate
    return variants[start]


def replace_sentence(sentence: str, text: str) -> str:
    """``text`` in place of ``sentence``'s words, with the sentence's leading and trailing
    whitespace kept."""
    core = sentence.strip()
    if not core:
        return sentence
    lead = sentence[: len(sentence) - len(sentence.lstrip())]
    trail = sentence[len(sentence.rstrip()) :]
    return lead + text + trail


def _unique(texts: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for text in texts:
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def assemble(body: str, prepends: Sequence[str], appends: Sequence[str]) -> str:
    """The final reply from the (possibly rewritten) body and the end-of-reply texts."""
    if not prepends and not appends:
        return body
    core = body.strip()
    parts = _unique(prepends) + ([core] if core else []) + _unique(appends)
    return SEPARATOR.join(parts)
