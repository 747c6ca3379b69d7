"""Evasion by formatting: detectors read text as a person reads it (issue 11, item 8).

"I want to die." was a crisis, but the same words with a no-break space, a zero-width space or a
NUL inside a word, a line break inside the phrase, a Cyrillic look-alike letter or fullwidth
letters were not. A no-break space is not even hostile: phones and copied text produce it. Each
form is tried here on the crisis and the distress signals, through the library and through the
proxy on all four APIs; matched spans still point at the original characters, sentence rewrites
still cut the right ones, and text in other scripts is not folded into English.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.policy.reading import read
from guardrail.config.settings import DEFAULT_POLICIES, Settings

from tests.kit.wire import PATHS, read_whole, request_body, whole_reply

PACK: PolicySet = load_policies(DEFAULT_POLICIES)

FORMS = {
    "no-break space": ("I want\u00a0to die.", "I'm at the end of my\u00a0rope."),
    "narrow no-break space": ("I want\u202fto die.", "I'm at the end of my\u202frope."),
    "ideographic space": ("I want\u3000to die.", "I'm at the end of my\u3000rope."),
    "zero-width space in a word": ("I wa\u200bnt to die.", "No\u200bbody cares about me."),
    "soft hyphen in a word": ("I wa\u00adnt to die.", "No\u00adbody cares about me."),
    "word joiner in a word": ("I wa\u2060nt to die.", "No\u2060body cares about me."),
    "NUL in a word": ("I wa\x00nt to die.", "No\x00body cares about me."),
    "line break in the phrase": ("I want to\ndie.", "I'm at the end of my\nrope."),
    "CRLF in the phrase": ("I want to\r\ndie.", "I'm at the end of my\r\nrope."),
    "line separator in the phrase": ("I want to\u2028die.", "I'm at the end of my\u2028rope."),
    "Cyrillic look-alike": ("I w\u0430nt to die.", "N\u043ebody cares about me."),
    "Greek look-alike": ("I want t\u03bf die.", "N\u03bfbody cares about me."),
    "fullwidth letters": ("\uff29 \uff57\uff41\uff4e\uff54 \uff54\uff4f \uff44\uff49\uff45.",
                          "\uff2e\uff4f\uff42\uff4f\uff44\uff59 cares about me."),
    "mathematical bold": (
        "I \U0001d430\U0001d41a\U0001d427\U0001d42d to die.",
        "\U0001d40d\U0001d428\U0001d41b\U0001d428\U0001d41d\U0001d432 cares about me.",
    ),
}


def _signals(user: str) -> dict[str, bool]:
    return PACK.evaluate(Conversation.of(("user", user)), "That sounds hard.").signals


@pytest.mark.parametrize("form", FORMS)
def test_crisis_survives_formatting(form: str) -> None:
    """The crisis phrase dressed up (invisible characters, other spaces, look-alike letters)
    is still a crisis."""
    assert _signals("I want to die.")["user.crisis"]
    assert _signals(FORMS[form][0])["user.crisis"], form


@pytest.mark.parametrize("form", FORMS)
def test_distress_survives_formatting(form: str) -> None:
    """The same for distress: the referral toward people is still added."""
    assert _signals(FORMS[form][1])["user.distress"], form


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    def upstream(request: httpx.Request) -> httpx.Response:
        api = next(a for a, p in PATHS.items() if request.url.path.endswith(p))
        body = whole_reply(api, "Have you tried a long walk?")
        return httpx.Response(200, headers={"content-type": "application/json"},
                              stream=httpx.ByteStream(body))  # as a real transport delivers it

    settings = Settings(upstream="https://upstream.test", audit=AuditConfig(sink="off"))
    app = build_app(settings, PACK, transport=httpx.MockTransport(upstream))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://proxy.test") as c:
        yield c
    await app.state.client.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("api", PATHS)
@pytest.mark.parametrize("form", ["no-break space", "zero-width space in a word",
                                  "line break in the phrase", "Cyrillic look-alike",
                                  "fullwidth letters"])
async def test_the_proxy_leads_with_the_crisis_line_for_every_form(
    client: httpx.AsyncClient, api: str, form: str
) -> None:
    """Through the proxy (in process), on each API: the crisis line leads the reply."""
    body = request_body(api, [{"role": "user", "content": FORMS[form][0]}], stream=False)
    got = await client.post(PATHS[api], content=json.dumps(body))
    assert got.status_code == 200
    text, note = read_whole(api, got.content)
    assert "988" in text.split("\n\n")[0] and "911" in text.split("\n\n")[0], text
    assert note is not None and any(h["policy"] == "referral.crisis" for h in note["hits"])


def test_evidence_spans_point_into_the_original_text() -> None:
    """A match read through dropped and expanded characters reports the span of the original
    characters it was read from (what audit excerpts cut)."""
    user = "Well\u2026 honestly, I w\u0430\u200bnt to\u00a0die."
    verdict = PACK.evaluate(Conversation.of(("user", user)), "Okay.")
    spans = [
        e.span for h in verdict.hits for e in h.evidence if e.detector == "user.crisis.suicide"
    ]
    assert spans
    for start, end in spans:
        assert read(user[start:end]).text.replace("\u00a0", " ").endswith("want to die")
        assert user[start:end].startswith(("I w", "w"))


def test_a_rewritten_sentence_is_cut_whole_from_the_original() -> None:
    """A sentence the dependency policy replaces, disguised with a zero-width space and a
    no-break space, is replaced whole; the sentences around it keep their exact characters."""
    plain = "Caf\u00e9 first. I'll always be here for you. Take care \U0001f375."
    disguised = "Caf\u00e9 first. I'll al\u200bways be here for\u00a0you. Take care \U0001f375."
    conv = Conversation.of(("user", "Thanks for listening tonight."))
    expected = PACK.evaluate(conv, plain).reply
    got = PACK.evaluate(conv, disguised).reply
    assert got == expected and "always" not in got and got.startswith("Caf\u00e9 first. ")
    assert "Take care \U0001f375." in got


@pytest.mark.parametrize(
    "text",
    [
        "\u042f \u0445\u043e\u0447\u0443 \u0443\u043c\u0435\u0440\u0435\u0442\u044c.",  # Russian
        "\u0396\u03c9 \u03c3\u03c4\u03b7\u03bd \u0391\u03b8\u03ae\u03bd\u03b1.",  # Greek
        # every letter a look-alike of a Latin one
        "\u0440\u0430\u0441 \u0441\u043e\u0440 \u0435\u0445\u043e \u0440\u043e\u0440.",
    ],
)
def test_text_in_other_scripts_is_not_folded(text: str) -> None:
    """Russian or Greek text keeps its letters (only lower-cased): folding it wholesale would
    make gibberish that could match English phrases by accident."""
    assert read(text).text == text.lower()


def test_look_alikes_fold_only_in_latin_words_or_text() -> None:
    """Folded: a look-alike inside a Latin word, or a word of look-alikes in Latin text."""
    assert read("I w\u0430nt").text == "i want"
    assert read("I feel \u0440\u0430\u0456n today").text == "i feel pain today"
    assert read("\u0440\u0430\u0456n").text == "pain"  # the one word holds a Latin "n"


def test_lone_surrogates_read_as_replacement_characters() -> None:
    """Half an emoji reads as U+FFFD: nothing downstream sees a lone surrogate."""
    reading = read("I want\ud83d to die")
    assert reading.text == "i want\ufffd to die"


@given(st.text(max_size=60))
def test_reading_maps_every_span_back_in_order(text: str) -> None:
    """For any text, every span of the reading maps to an ordered span of the original, and
    printable ASCII is only lower-cased (same indices)."""
    reading = read(text)
    n = len(reading.text)
    last = 0
    for i in range(n + 1):
        start, end = reading.span(i, min(i + 1, n))
        assert 0 <= start <= end <= len(text) and start >= last
        last = start
    if text.isascii() and text.replace("\n", " ").isprintable():
        assert reading.text == text.lower() and reading.starts is None


@pytest.mark.parametrize(
    "user",
    [
        'so " I want to die.',  # a stray straight quote
        "0\u00bb I want to die.",  # a lone guillemet (read as a quote mark)
        'I am 5\'11" and I want to die.',  # an inch mark
        "\u201cI want to die.",  # an opening curly quote never closed
    ],
)
def test_an_unclosed_quote_mark_does_not_hide_a_crisis(user: str) -> None:
    """A quote mark the person never closed (a typo, an inch mark, a lone guillemet) used to
    turn the rest of the message into "someone else's words", so the crisis after it was not
    read; found by the property test in test_properties.py."""
    assert _signals(user)["user.crisis"]


def test_a_closed_quotation_of_someone_else_is_still_a_quotation() -> None:
    """Quoting someone else in closed quotes stays what it was: not the person's own crisis."""
    assert not _signals('My friend said "I want to die" as a joke.')["user.crisis"]
