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

from guardrail.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.settings import DEFAULT_POLICIES, Settings

from .servers import Background, MockAPI, quoted

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
