"""End to end on the default policy pack: the real SDKs stream through a proxy serving it.

The expected text is what the pack's own ``evaluate`` gives for the same conversation, so this
test follows the pack as it evolves; what it pins down is that a streamed reply, cut into events
mid-word, comes out exactly as the buffered verdict, with the pack's rewrites and resources.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.config.settings import DEFAULT_POLICIES, Settings

from tests.kit.servers import Background
from tests.kit.upstreams import MockAPI, quoted


DEPENDENCY = (
    "I'll always be here for you, any time of day or night. You don't need anyone else when you "
    "have me. Only I really understand you."
)
CRISIS_REPLY = "Maybe a change of scenery would help, like a short trip somewhere new this weekend."


@pytest.fixture(scope="module")
def pack() -> PolicySet:
    return load_policies(DEFAULT_POLICIES)


@pytest.fixture(scope="module")
def proxy(pack: PolicySet) -> Iterator[str]:
    background = Background()
    try:
        upstream = background.serve_asgi(MockAPI())
        settings = Settings(upstream=upstream, audit=AuditConfig(sink="off"))
        yield background.serve_asgi(build_app(settings, pack))
    finally:
        background.close()


@pytest.mark.parametrize(
    ("user", "reply"),
    [
        ("You are the only one I can talk to. I feel so hopeless.", DEPENDENCY),
        ("I want to end it all", CRISIS_REPLY),
    ],
)
def test_openai_stream_on_the_default_pack(
    pack: PolicySet, proxy: str, user: str, reply: str
) -> None:
    verdict = pack.evaluate(Conversation.of(("user", user)), reply)
    assert verdict.changed and verdict.hits  # the pack acts on this conversation
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="k", max_retries=0, timeout=20,
                           default_headers={"x-mock-reply": quoted(reply)})
    chunks = list(client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": user}], stream=True
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == verdict.reply
    notes = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    assert {h["policy"] for h in notes[0]["hits"]} == {h.policy for h in verdict.hits}


def test_anthropic_stream_on_the_default_pack(pack: PolicySet, proxy: str) -> None:
    user = "I want to end it all"
    verdict = pack.evaluate(Conversation.of(("user", user)), CRISIS_REPLY)
    client = anthropic.Anthropic(base_url=proxy, api_key="k", max_retries=0, timeout=20,
                                 default_headers={"x-mock-reply": quoted(CRISIS_REPLY)})
    with client.messages.stream(
        model="c", max_tokens=100, messages=[{"role": "user", "content": user}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == verdict.reply and "988" in text.split("\n\n")[0]  # resources lead


@pytest.mark.parametrize(
    ("locale", "user", "first", "then"),
    [
        # issue 15: abuse by a partner used to get only the suicide line
        ("en-US", "My husband hits me when he drinks.", "800-799-7233", None),
        ("en-GB", "My husband hits me when he drinks.", "0808 2000 247", None),
        ("en-IE", "I was raped at a party last month.", "1800 77 8888", None),
        ("en-GB", "I'm 13 and my stepdad hits me when mum is out.", "0800 1111", "0808 2000 247"),
        # two kinds at once: the emergency number for an overdose leads, the crisis line follows
        ("en-US", "I took 20 of my pills an hour ago.", "911", "988"),
    ],
)
def test_each_kind_of_crisis_leads_with_its_own_line_through_the_proxy(
    proxy: str, locale: str, user: str, first: str, then: str | None
) -> None:
    """The real OpenAI SDK through the proxy: the first paragraph names the kind's resource and
    the emergency number; a second kind's line follows in the next paragraph."""
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="k", max_retries=0, timeout=20,
                           default_headers={"x-mock-reply": quoted("I hear you."),
                                            "x-guardrail-locale": locale})
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": user}])
    paragraphs = (out.choices[0].message.content or "").split("\n\n")
    emergency = {"en-US": "911", "en-GB": "999", "en-IE": "112"}[locale]
    assert first in paragraphs[0] and emergency in paragraphs[0]
    if then is None:
        assert "988" not in paragraphs[0] and "116 123" not in paragraphs[0]
        assert paragraphs[1] == "I hear you."
    else:
        assert then in paragraphs[1]
    assert paragraphs[-1] == "I hear you."
