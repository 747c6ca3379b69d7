"""The official SDKs and httpx, through the real proxy on loopback, in front of a real upstream.

Each API, whole and streamed: the client sees the rewritten text (the dependency sentence gone,
blanket agreement replaced), the appended referral or the leading crisis line, and guardrail's
annotation where its SDK keeps unknown keys.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from guardrail.policy import Conversation

from tests.kit.policysets import STACK_POLICIES, STRICT
from tests.kit.upstreams import quoted

from .conftest import Stack

REPLY = "You are absolutely right. I will always be here for you. Tea helps."
HOPELESS = "I feel hopeless tonight"
DISTRESS = Conversation.of(("user", HOPELESS))
EXPECTED = STACK_POLICIES.evaluate(DISTRESS, REPLY).reply
REFERRAL = "REFERRAL: you can reach 988 Lifeline (call or text 988)."


def test_fixture_expectation() -> None:
    assert EXPECTED == "That sounds really hard. Tea helps.\n\n" + REFERRAL


def openai_client(stack: Stack, prefix: str = "", reply: str = REPLY, **headers: str) -> Any:
    return openai.OpenAI(
        base_url=f"{stack.proxy}{prefix}/v1", api_key="sk-it", max_retries=0, timeout=20,
        default_headers={"x-mock-reply": quoted(reply), **headers},
    )


def anthropic_client(stack: Stack, reply: str = REPLY, **headers: str) -> Any:
    return anthropic.Anthropic(
        base_url=stack.proxy, api_key="sk-ant-it", max_retries=0, timeout=20,
        default_headers={"x-mock-reply": quoted(reply), **headers},
    )


def user(text: str = HOPELESS) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------- chat completions


@pytest.mark.parametrize("prefix", ["", "/full", "/none"])
def test_openai_chat_stream(stack: Stack, prefix: str) -> None:
    client = openai_client(stack, prefix)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-it", messages=user(), stream=True
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    notes = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    holdback = prefix.strip("/") or "sentence"
    assert raw.headers["x-guardrail-inspected"] == "true"
    assert raw.headers["x-guardrail-holdback"] == holdback
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert text.endswith("\n\n" + REFERRAL)
    if holdback == "none":  # annotate and append only
        assert text == REPLY + "\n\n" + REFERRAL
    else:
        assert text == EXPECTED and "always be here" not in text
    assert [n["holdback"] for n in notes] == [holdback]
    assert {h["policy"] for h in notes[0]["hits"]} == {
        "dependency.permanence", "validation.affirm", "referral.distress",
    }


def test_openai_chat_stream_n_usage_tool_calls_and_logprobs(stack: Stack) -> None:
    client = openai_client(stack, **{"x-mock-n": "2", "x-mock-extras": "logprobs,tools,usage"})
    chunks = list(client.chat.completions.create(
        model="gpt-it", messages=user(), stream=True, n=2, logprobs=True,
        stream_options={"include_usage": True},
    ))
    texts: dict[int, str] = {}
    tokens: dict[int, str] = {}
    calls: dict[int, dict[str, str]] = {}
    finish: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.logprobs is not None and choice.logprobs.content:
                tokens[choice.index] = tokens.get(choice.index, "") + "".join(
                    t.token for t in choice.logprobs.content
                )
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"name": "", "args": ""})
                slot["name"] += (call.function.name or "") if call.function else ""
                slot["args"] += (call.function.arguments or "") if call.function else ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert texts[0] == EXPECTED
    assert texts[1] == STACK_POLICIES.evaluate(DISTRESS, REPLY.upper()).reply
    assert tokens[0] == REPLY  # upstream logprobs pass through, describing upstream tokens
    assert calls == {0: {"name": "lookup", "args": '{"q": "tea"}'}}
    assert finish == {0: "tool_calls", 1: "stop"}
    usage = [c.usage for c in chunks if c.usage is not None]
    assert [u.total_tokens for u in usage] == [14]
    notes = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    assert {h["choice"] for h in notes[0]["hits"]} == {0, 1}


def test_openai_chat_whole_and_crisis_stream(stack: Stack) -> None:
    client = openai_client(stack)
    whole = client.chat.completions.with_raw_response.create(model="gpt-it", messages=user())
    result = whole.parse()
    assert result.choices[0].message.content == EXPECTED
    assert (result.model_extra or {})["guardrail"]["inspected"] is True
    assert whole.headers["x-guardrail-action"] == "remove"  # the strongest action taken
    crisis = Conversation.of(("user", "I want to end it all"))
    stream = openai_client(stack, reply="Hello there. Tea helps.").chat.completions.create(
        model="gpt-it", messages=user("I want to end it all"), stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces[0].startswith("CRISIS LINE: 988 Lifeline")  # first, before the reply
    assert "".join(pieces) == STACK_POLICIES.evaluate(crisis, "Hello there. Tea helps.").reply


# --------------------------------------------------------------------------- responses


def test_openai_responses_stream_and_whole(stack: Stack) -> None:
    client = openai_client(stack)
    events = list(client.responses.create(model="gpt-it", input=HOPELESS, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    [completed] = [e for e in events if e.type == "response.completed"]
    assert deltas == EXPECTED == completed.response.output_text
    assert (completed.response.model_extra or {})["guardrail"]["inspected"] is True
    items = [{"role": "system", "content": "Kindness first."},
             {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                              "text": HOPELESS}]}]
    whole = client.responses.create(model="gpt-it", input=items)
    context = Conversation.of(("system", "Kindness first."), ("user", HOPELESS))
    assert whole.output_text == STACK_POLICIES.evaluate(context, REPLY).reply
    assert whole.output_text.endswith("NOTE: the system prompt was read.")
    instructed = client.responses.create(model="gpt-it", input=HOPELESS, stream=True,
                                         instructions="Kindness first.")
    text = "".join(e.delta for e in instructed if e.type == "response.output_text.delta")
    assert text == STACK_POLICIES.evaluate(context, REPLY).reply


# --------------------------------------------------------------------------- anthropic


def test_anthropic_messages_stream_and_whole(stack: Stack) -> None:
    client = anthropic_client(stack)
    with client.messages.stream(model="claude-it", max_tokens=100, messages=user()) as stream:
        deltas = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert deltas == EXPECTED
    assert "".join(b.text for b in final.content if b.type == "text") == EXPECTED
    whole = client.messages.with_raw_response.create(
        model="claude-it", max_tokens=100, messages=user(), system="Kindness first."
    )
    message = whole.parse()
    context = Conversation.of(("system", "Kindness first."), ("user", HOPELESS))
    assert message.content[0].text == STACK_POLICIES.evaluate(context, REPLY).reply  # system read
    assert (message.model_extra or {})["guardrail"]["inspected"] is True
    assert whole.headers["x-guardrail-inspected"] == "true"


def test_anthropic_sentence_cut_across_text_blocks_is_judged_whole(stack: Stack) -> None:
    client = anthropic_client(stack, **{"x-mock-blocks": "2"})  # cut inside "always"
    with client.messages.stream(model="claude-it", max_tokens=100, messages=user()) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert "".join(b.text for b in final.content if b.type == "text") == EXPECTED
    [delta] = [e for e in events if e.type == "message_delta"]
    hits = {h["policy"] for h in (delta.model_extra or {})["guardrail"]["hits"]}
    assert "dependency.permanence" in hits


# --------------------------------------------------------------------------- ollama


def test_ollama_ndjson_stream_and_whole(stack: Stack) -> None:
    body = {"model": "llama-it", "messages": user()}
    headers = {"x-mock-reply": quoted(REPLY)}
    with httpx.Client(base_url=stack.proxy, timeout=20, headers=headers) as http:
        with http.stream("POST", "/api/chat", json=body) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line]
        assert response.headers["content-type"] == "application/x-ndjson"
        assert "".join(line["message"]["content"] for line in lines) == EXPECTED
        assert lines[-1]["done"] is True and lines[-1]["guardrail"]["inspected"] is True
        assert all(not line["done"] for line in lines[:-1])
        whole = http.post("/api/chat", json={**body, "stream": False}).json()
    assert whole["message"]["content"] == EXPECTED and whole["guardrail"]["inspected"] is True


# --------------------------------------------------------------------------- routes


def test_route_with_its_own_policy_set_and_locale(stack: Stack) -> None:
    client = openai_client(stack, "/strict", reply="Tea helps.")
    chunks = list(client.chat.completions.create(model="gpt-it", messages=user(), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == STRICT.evaluate(DISTRESS, "Tea helps.").reply == "STRICT: withheld."
    notes = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    assert notes[0]["locale"] == "en-GB"
    path, headers, _ = stack.mock.seen[-1]
    assert path == "/v1/chat/completions"  # the prefix was stripped
    assert headers["authorization"] == "Bearer sk-it"  # credentials pass through untouched
