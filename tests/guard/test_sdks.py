"""The official SDKs parse the pump's output and see the rewritten text and the referral."""

from __future__ import annotations

from typing import Any

import pytest

from guardrail.guard.stream import StreamGuard

from tests.kit.clients import anthropic_client, openai_client


from .guardkit import (
    CRISIS,
    DISTRESS,
    POLICIES,
    REFERRAL,
    REPLY,
    anthropic_stream,
    chat_stream,
    responses_stream,
)

EXPECTED = POLICIES.evaluate(DISTRESS, REPLY).reply


def pumped(api: str, data: bytes, holdback: Any = "sentence", cut: int = 7) -> bytes:
    guard = StreamGuard(api, POLICIES, DISTRESS, holdback=holdback)
    parts = [data[i : i + cut] for i in range(0, len(data), cut)]
    return b"".join(guard.feed(p) for p in parts) + guard.close()


@pytest.mark.parametrize("holdback", ["sentence", "full", "none"])
def test_openai_sdk_reads_the_guarded_chat_stream(holdback: str) -> None:
    client = openai_client(pumped("openai.chat", chat_stream(), holdback))
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "I feel hopeless"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    notes = [
        c.model_extra["guardrail"] for c in chunks if c.model_extra and "guardrail" in c.model_extra
    ]
    assert text.endswith("\n\n" + REFERRAL)
    if holdback != "none":
        assert text == EXPECTED
    assert [n["holdback"] for n in notes] == [holdback]
    assert any(c.usage is not None for c in chunks)  # the usage chunk still arrives


def test_openai_sdk_reads_a_broken_off_stream() -> None:
    data = chat_stream()
    guard = StreamGuard("openai.chat", POLICIES, DISTRESS)
    out = guard.feed(data[: data.index(b"no matter")]) + guard.close("upstream-broken")
    client = openai_client(out)
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("That sounds really hard.") and text.endswith(REFERRAL)


@pytest.mark.parametrize("tool_last", [False, True])
@pytest.mark.parametrize("holdback", ["sentence", "full"])
def test_anthropic_sdk_reads_the_guarded_message_stream(tool_last: bool, holdback: str) -> None:
    client = anthropic_client(
        pumped("anthropic.messages", anthropic_stream(tool_last=tool_last), holdback)
    )
    with client.messages.stream(
        model="claude-test",
        max_tokens=100,
        messages=[{"role": "user", "content": "I feel hopeless"}],
    ) as s:
        deltas = "".join(s.text_stream)
        message = s.get_final_message()
    texts = [b.text for b in message.content if b.type == "text"]
    assert "".join(texts) == EXPECTED == deltas
    types = [b.type for b in message.content]
    if not tool_last:
        assert types == ["text"]
    elif holdback == "full":  # the whole text is known before the text block stops
        assert types == ["text", "tool_use"]
    else:  # the text block stopped before the end texts were known: they get a new block
        assert types == ["text", "tool_use", "text"]


def test_openai_sdk_reads_the_guarded_responses_stream() -> None:
    client = openai_client(pumped("openai.responses", responses_stream()))
    events = list(client.responses.create(model="gpt-test", input="I feel hopeless", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = [e for e in events if e.type == "response.completed"]
    assert deltas == EXPECTED == completed[0].response.output_text
    assert completed[0].response.model_extra is not None
    assert completed[0].response.model_extra["guardrail"]["inspected"] is True


def test_openai_sdk_sees_the_crisis_line_first() -> None:
    guard = StreamGuard("openai.chat", POLICIES, CRISIS)
    client = openai_client(guard.feed(chat_stream()) + guard.close())
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts[0].startswith("CRISIS: 988 Lifeline")
    assert "".join(texts) == POLICIES.evaluate(CRISIS, REPLY).reply
