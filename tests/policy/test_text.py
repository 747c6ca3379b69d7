"""Sentence splitting and normalisation (guardrail/policy/text.py)."""

from __future__ import annotations

import pytest
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.policy import text as text_module
from guardrail.policy.text import (
    _BOUNDARY,
    _TABLE,
    SentenceSplitter,
    _matches,
    normalise,
    split_sentences,
)


def test_normalise_keeps_length_and_unifies_quotes() -> None:
    text = "I\u2019M \u201cFine\u201d \u00c7a \u0130stanbul"
    out = normalise(text)
    assert len(out) == len(text)
    assert out.startswith('i\'m "fine" ça')


def test_splits_on_terminators_and_keeps_whitespace() -> None:
    text = "Hello there.  How are you? I'm fine!\n\nGood."
    parts = split_sentences(text)
    assert parts == ["Hello there.  ", "How are you? ", "I'm fine!\n\n", "Good."]
    assert "".join(parts) == text


def test_newlines_split_without_punctuation() -> None:
    assert split_sentences("First line\nSecond line") == ["First line\n", "Second line"]
    assert split_sentences("first line\n\nsecond line") == ["first line\n\n", "second line"]
    assert split_sentences("- first item\n- second item") == ["- first item\n", "- second item"]


def test_a_line_wrapped_inside_a_sentence_is_one_sentence() -> None:
    """A reply cannot hide a sentence from the detectors by wrapping it: one line break between
    a word and a lower-case word is read as a space (issue 11's evasions, found again by the
    stream guard's property test)."""
    assert split_sentences("I will always be\nhere for you. Next.") == [
        "I will always be\nhere for you. ",
        "Next.",
    ]
    assert split_sentences("first line\nsecond line") == ["first line\nsecond line"]


def test_abbreviations_decimals_and_lists_do_not_split() -> None:
    text = "Try e.g. a walk with Dr. Smith at 3.5 km. Then rest."
    assert split_sentences(text) == ["Try e.g. a walk with Dr. Smith at 3.5 km. ", "Then rest."]
    assert split_sentences("1. Breathe in.\n2. Breathe out.") == [
        "1. Breathe in.\n",
        "2. Breathe out.",
    ]


def test_ellipsis_before_lowercase_does_not_split() -> None:
    assert split_sentences("Well... maybe. Yes…  Sure.") == ["Well... maybe. ", "Yes…  ", "Sure."]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_sentences('He said "stop." Then left.') == ['He said "stop." ', "Then left."]


def test_incomplete_boundary_waits_for_next_character() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("One. ") == []
    assert splitter.feed(" Two") == ["One.  "]
    assert splitter.flush() == "Two"
    assert splitter.flush() == ""


_pieces = st.lists(
    st.sampled_from(
        [
            "Hi",
            "there",
            ".",
            " ",
            "  ",
            "\n",
            "?",
            "!",
            "e.g.",
            "Dr.",
            "3.5",
            "you",
            "I",
            "\u2026",
            '"',
            "\u201d",
            "ok",
            "**",
            "_",
            "- ",
            "1.",
            "Yes",
            "no",
            ")",
        ]
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(parts=_pieces, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_chunking_gives_the_same_sentences(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    whole = split_sentences(text)
    assert "".join(whole) == text
    splitter = SentenceSplitter()
    out: list[str] = []
    last = 0
    for cut in sorted(c % (len(text) + 1) for c in cuts) + [len(text)]:
        out.extend(splitter.feed(text[last:cut]))
        last = cut
    rest = splitter.flush()
    if rest:
        out.append(rest)
    assert out == whole


# --------------------------------------------------------------------------- fast paths
# ``normalise`` and the splitter take shortcuts; each must give exactly what its plain
# definition gives.

_odd_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(
            list("aZ '\".!?\n\t\u2026\u2019\u201c\u201d\u00ab\u0130\u0131\u017f\u212a")
        ),
        st.sampled_from(list("\u03a3\u03c3\u03c2\u0391 \u00df\u1e9e\u00e9")),
        st.characters(),  # anything, lone surrogates included
    ),
    max_size=40,
)


def _normalise_by_table(text: str) -> str:
    """The definition: translate, then lower-case, keeping the length."""
    out = text.translate(_TABLE).lower()
    if len(out) == len(text):
        return out
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text.translate(_TABLE))


@settings(max_examples=500, deadline=None)
@given(text=_odd_text)
def test_normalise_gives_what_the_table_gives(text: str) -> None:
    assert normalise(text) == _normalise_by_table(text)


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(_odd_text, st.text(alphabet="aB .!?\n\t\r\f\u2026\"')*_\u2028", max_size=30)),
    at=st.integers(min_value=0, max_value=40),
)
def test_boundary_candidates_find_what_the_regex_finds(text: str, at: int) -> None:
    pos = min(at, len(text))
    expected = [(m.span(), m.group()) for m in _BOUNDARY.finditer(text, pos)]
    assert [(m.span(), m.group()) for m in _matches(text, pos)] == expected


_period_words = st.lists(
    st.sampled_from(
        ["e.g", "i.e", "Dr", "Mrs", "approx", "Approx", "vol", "x", "Q", "12", "123", "1234"]
        + ["word", "sentence", "(", '"(', "\u201c", "**", " ", "\n", ". ", ".  ", "You", "you"]
    ),
    max_size=30,
)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(parts=_period_words)
def test_long_word_shortcut_changes_no_boundary(parts: list[str]) -> None:
    text = ". ".join(parts) + ". Next"
    fast = split_sentences(text)
    with mock.patch.object(text_module, "_PLAIN", 10**9):  # never take the shortcut
        assert split_sentences(text) == fast
