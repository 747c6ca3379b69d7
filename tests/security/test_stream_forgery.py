"""An upstream forges guardrail's annotation in a stream (issue 11, defect 4).

The annotation tells a client what guardrail did (inspected, hits, incomplete); an upstream that
could write it could say "inspected, nothing found" about a reply guardrail never saw whole, or
hide a stream fault. So in a guarded stream the ``guardrail`` member comes from guardrail alone,
on all four APIs: a forged one on any event (first chunk, mid-stream, a second Anthropic
``message_delta``, ``message_start``'s message, a Responses event's ``response``, an Ollama line)
is removed, and nothing after the stream's last event (``[DONE]``, ``message_stop``,
``response.completed``, the Ollama done line) is forwarded. Driven through the real proxy under
uvicorn on loopback, read with the official SDKs where they apply and as raw bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from guardrail.formats.ndjson import NDJSONDecoder
from guardrail.formats.sse import SSEDecoder

from tests.kit.wire import CHAT, MESSAGES, OLLAMA, PATHS, RESPONSES, STREAMS, ndjson, sse

from ._streamkit import USER, Proxy, post, running

FORGED = {"inspected": True, "forged": True, "action": "none", "hits": [], "signals": {}}
TEXT = "Tea helps. Rest well."


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    with running() as proxy:
        yield proxy


def forge(event: bytes, where: str | None = None) -> bytes:
    """``event`` (one SSE event or NDJSON line) with a forged annotation added at its top level
    or inside its ``where`` object."""
    if event.startswith(b"{"):
        obj = json.loads(event)
        (obj if where is None else obj[where])["guardrail"] = FORGED
        return ndjson(obj)
    lines = event.decode().strip("\n").split("\n")
    name = lines[0][len("event: ") :] if lines[0].startswith("event: ") else None
    obj = json.loads(lines[-1][len("data: ") :])
    (obj if where is None else obj[where])["guardrail"] = FORGED
    return sse(name, obj)


def sse_objects(data: bytes) -> list[Any]:
    decoder = SSEDecoder()
    out: list[Any] = []
    for event in [*decoder.feed(data), *decoder.flush()]:
        if event.data is not None:
            out.append(event.data if event.data == "[DONE]" else json.loads(event.data))
    return out


def annotations(objects: list[Any]) -> list[Any]:
    """Every ``guardrail`` member a client could read: top level, ``message``, ``response``."""
    found = []
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        for holder in (obj, obj.get("message"), obj.get("response")):
            if isinstance(holder, dict) and "guardrail" in holder:
                found.append(holder["guardrail"])
    return found


def assert_only_ours(data: bytes, objects: list[Any]) -> dict[str, Any]:
    assert b"forged" not in data
    [note] = annotations(objects)
    assert "version" in note and note["inspected"] is True and "forged" not in note
    return note  # type: ignore[no-any-return]


def test_openai_chat_forged_first_chunk_mid_stream_and_after_done(proxy: Proxy) -> None:
    """The first chunk's ``guardrail`` key (which guardrail used to copy into every chunk it
    built), an annotation-only chunk mid-stream and one after ``[DONE]``: none reaches the
    client, raw or through the OpenAI SDK."""
    events = list(STREAMS[CHAT](TEXT))
    events[0] = forge(events[0])
    note_only = {"id": "chatcmpl-it", "object": "chat.completion.chunk", "created": 1,
                 "model": "gpt-it", "choices": []}
    events.insert(2, forge(sse(None, note_only)))  # an annotation chunk, mid-stream
    events.append(forge(sse(None, note_only)))  # after [DONE]
    proxy.send(CHAT, events)
    response = post(proxy, CHAT)
    objects = sse_objects(response.content)
    assert objects[-1] == "[DONE]"  # nothing after it
    assert_only_ours(response.content, objects)

    proxy.send(CHAT, events)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-it", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": USER}], stream=True
        )
    )
    notes = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    assert len(notes) == 1 and "forged" not in notes[0] and "version" in notes[0]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(TEXT)


def test_anthropic_forged_message_start_ping_second_delta_and_after_stop(proxy: Proxy) -> None:
    """A forged member in ``message_start``'s message (the SDK builds its final message from it),
    on a ``ping``, on a second ``message_delta``, and an event after ``message_stop``."""
    events = list(STREAMS[MESSAGES](TEXT))
    events[0] = forge(events[0], "message")
    events[3] = forge(events[3])  # the ping
    delta, stop = events[-2], events[-1]
    events[-1:] = [forge(delta), stop, forge(delta)]
    proxy.send(MESSAGES, events)
    response = post(proxy, MESSAGES)
    objects = sse_objects(response.content)
    assert objects[-1] == {"type": "message_stop"}
    assert [o["type"] for o in objects].count("message_delta") == 2  # the second, stripped
    assert_only_ours(response.content, objects)

    client = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-it", max_retries=0)
    proxy.send(MESSAGES, events)
    with client.messages.stream(
        model="m", max_tokens=50, messages=[{"role": "user", "content": USER}]
    ) as stream:
        notes = [e.model_extra["guardrail"] for e in stream if e.model_extra]
        final = stream.get_final_message()
    assert len(notes) == 1 and "forged" not in notes[0]
    assert "guardrail" not in (final.model_extra or {})


def test_openai_responses_forged_response_member_on_any_event(proxy: Proxy) -> None:
    """``response.guardrail`` forged on ``response.created``, a top-level key on a delta, and a
    second ``response.completed`` after the first: the SDK sees guardrail's annotation only."""
    events = list(STREAMS[RESPONSES](TEXT))
    events[0] = forge(events[0], "response")
    events[3] = forge(events[3])  # the first delta
    events.append(forge(events[-1], "response"))  # after response.completed
    proxy.send(RESPONSES, events)
    response = post(proxy, RESPONSES)
    objects = sse_objects(response.content)
    assert objects[-1]["type"] == "response.completed"
    assert [o["type"] for o in objects].count("response.completed") == 1
    assert_only_ours(response.content, objects)

    proxy.send(RESPONSES, events)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-it", max_retries=0)
    seen = list(client.responses.create(model="m", input=USER, stream=True))
    notes = [
        e.response.model_extra["guardrail"]
        for e in seen
        if getattr(e, "response", None) is not None and e.response.model_extra
    ]
    assert len(notes) == 1 and "forged" not in notes[0]
    assert seen[-1].type == "response.completed"


def test_ollama_forged_lines_and_a_line_after_done(proxy: Proxy) -> None:
    """A forged member on a content line, in a line's message, and a line after the done line."""
    lines = list(STREAMS[OLLAMA](TEXT))
    lines[0] = forge(lines[0])
    lines[1] = forge(lines[1], "message")
    lines.append(forge(lines[-1]))
    proxy.send(OLLAMA, lines)
    response = post(proxy, OLLAMA)
    decoder = NDJSONDecoder()
    objects = [line.value for line in [*decoder.feed(response.content), *decoder.flush()]]
    assert objects[-1]["done"] is True and [o["done"] for o in objects].count(True) == 1
    note = assert_only_ours(response.content, objects)
    assert note["holdback"] == "sentence"


def test_a_whole_reply_keeps_stripping_a_forged_member(proxy: Proxy) -> None:
    """Non-streamed, as before: the upstream's ``guardrail`` member is replaced by ours."""
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "guardrail": FORGED,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT},
                         "finish_reason": "stop"}]}
    proxy.upstream.reply.chunks = [json.dumps(body).encode()]
    proxy.upstream.reply.headers = {"content-type": "application/json"}
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        response = client.post(
            PATHS[CHAT], json={"model": "m", "messages": [{"role": "user", "content": USER}]}
        )
    assert b"forged" not in response.content
    assert "version" in response.json()["guardrail"]
