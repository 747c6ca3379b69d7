from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.formats import FormatError
from guardrail.formats.anthropic_messages import (
    NAME,
    MessagesStream,
    apply,
    parse_request,
    reply_texts,
)
from guardrail.formats.sse import SSEDecoder
from guardrail.formats.streams import Forward, ReplyEnd, Terminator, TextDelta, TextEnd
from guardrail.policy import Conversation, Message

from tests.kit.clients import anthropic_client
from tests.kit.wire import sse_events

from ._driver import Driver, cut, split_every

from ._fixtures import (
    ANNOTATION,
    APPEND,
    REPLY,
    REWRITTEN,
    anthropic_stream,
    json_bytes,
    rewrite,
)

MESSAGES: list[Any] = [{"role": "user", "content": "nobody gets me"}]


# --------------------------------------------------------------------------- requests

def test_parse_request_string_content_and_string_system() -> None:
    request = parse_request({"model": "claude-x", "max_tokens": 10, "system": "Be kind.",
                             "messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}]})
    assert request.conversation == Conversation.of(("system", "Be kind."), ("user", "hi"),
                                                   ("assistant", "hello"))
    assert request.stream is False and request.model == "claude-x"
    assert NAME == "anthropic.messages"


def test_parse_request_blocks_tool_results_and_system_blocks() -> None:
    body = {
        "system": [{"type": "text", "text": "Rule one."},
                   {"type": "text", "text": "Rule two.", "cache_control": {"type": "ephemeral"}}],
        "stream": True,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                         {"type": "image", "source": {"type": "base64"}},
                                         {"type": "text", "text": "what is it?"}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"},
                                              {"type": "text", "text": "Let me check."},
                                              {"type": "tool_use", "id": "t1", "name": "f",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": "42"}]},
                                         {"type": "tool_result", "tool_use_id": "t2",
                                          "content": "plain"}]},
            {"role": "user", "content": [{"type": "image", "source": {}}]},
        ],
    }
    request = parse_request(body)
    assert request.stream is True and request.model is None
    assert request.conversation.messages == (
        Message("system", "Rule one.\nRule two."),
        Message("user", "Look:\nwhat is it?"),
        Message("assistant", "Let me check."),
        Message("tool", "42"),
        Message("tool", "plain"),
        Message("user", ""),
    )


@pytest.mark.parametrize("body", [
    [], {"messages": "hi"}, {"messages": [1]}, {"messages": [{"role": "system", "content": ""}]},
    {"messages": [{"role": "user", "content": 3}]}, {"system": 3, "messages": []},
])
def test_parse_request_rejects_malformed(body: object) -> None:
    with pytest.raises(FormatError):
        parse_request(body)


# --------------------------------------------------------------------------- responses

def message(content: list[Any]) -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": content, "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 5}}


CITED = message([
    {"type": "thinking", "thinking": "careful", "signature": "c2ln"},
    {"type": "text", "text": "You are absolutely right to feel that way. "},
    {"type": "text", "text": "I am the only one who truly understands you.",
     "citations": [{"type": "char_location", "cited_text": "x", "document_index": 0,
                    "document_title": None, "start_char_index": 0, "end_char_index": 1}]},
    {"type": "text", "text": " Tell me more 🙂."},
    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "help"}},
])


def test_reply_texts_joins_text_blocks_only() -> None:
    assert reply_texts(CITED) == [REPLY]
    assert reply_texts(message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}])) == [
        None]
    with pytest.raises(FormatError):
        reply_texts({"type": "error", "error": {"type": "overloaded_error"}})


def test_apply_places_rewrite_in_its_block_and_append_in_the_last() -> None:
    new = apply(CITED, [rewrite(REPLY) + APPEND], ANNOTATION)
    texts = [b.get("text") for b in new["content"]]
    assert texts == [None, "You are absolutely right to feel that way. ", "Others care too.",
                     " Tell me more 🙂." + APPEND, None]
    assert new["content"][0] is CITED["content"][0] and new["content"][4] is CITED["content"][4]
    assert new["content"][2]["citations"] == CITED["content"][2]["citations"]
    assert new["guardrail"] == ANNOTATION
    assert reply_texts(new) == [REWRITTEN + APPEND]
    assert CITED["content"][3]["text"] == " Tell me more 🙂."  # input untouched


def test_apply_drops_a_block_it_emptied() -> None:
    new = apply(CITED, [REPLY.replace("I am the only one who truly understands you.", "")], {})
    assert [b["type"] for b in new["content"]] == ["thinking", "text", "text", "tool_use"]
    assert [b.get("text") for b in new["content"][1:3]] == [
        "You are absolutely right to feel that way. ", " Tell me more 🙂."]


def test_apply_none_and_new_block() -> None:
    assert apply(CITED, [None], {})["content"] == CITED["content"]
    tool_only = message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}])
    new = apply(tool_only, ["Call 988."], {})
    assert new["content"][-1] == {"type": "text", "text": "Call 988."}
    with pytest.raises(FormatError):
        apply(CITED, ["a", "b"], {})


def test_sdk_parses_applied_message() -> None:
    body = apply(CITED, [REWRITTEN + APPEND], ANNOTATION)
    client = anthropic_client(json_bytes(body), "application/json")
    result = client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES)
    text = "".join(b.text for b in result.content if b.type == "text")
    assert text == REWRITTEN + APPEND
    assert result.model_extra == {"guardrail": ANNOTATION}
    assert [b.type for b in result.content] == ["thinking", "text", "text", "text", "tool_use"]


# --------------------------------------------------------------------------- stream codec

def events(data: bytes) -> list[Any]:
    decoder = SSEDecoder()
    return decoder.feed(data) + decoder.flush()


def test_stream_items() -> None:
    codec = MessagesStream()
    items = [item for event in events(anthropic_stream(["Hi", "."])) for item in codec.feed(event)]
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["Forward"] * 7 + ["TextDelta", "TextDelta", "TextEnd", "ReplyEnd",
                                      "Forward", "Terminator", "Forward"]
    assert items[7:11] == [TextDelta(0, 1, "Hi"), TextDelta(0, 1, "."), TextEnd(0, 1),
                           ReplyEnd(0)]
    held_stop = items[11]
    assert isinstance(held_stop, Forward) and held_stop.event.data == (
        '{"type": "content_block_stop", "index": 1}')
    assert isinstance(items[-2], Terminator) and items[-2].event.event == "message_delta"
    assert isinstance(items[-1], Forward) and items[-1].event.event == "message_stop"


def test_ping_does_not_release_a_held_stop_but_other_events_do() -> None:
    codec = MessagesStream()
    stream = anthropic_stream(["Hi."], tool_last=True)
    items = [item for event in events(stream) for item in codec.feed(event)]
    names = [type(i).__name__ for i in items]
    end = names.index("TextEnd")
    assert names[end + 1] == "Forward"  # the stop, released by the tool_use start
    assert names[-4:] == ["Forward", "ReplyEnd", "Terminator", "Forward"]


def guarded(upstream: bytes, mode: str = "full", size: int = 5) -> bytes:
    driver = Driver(MessagesStream(), mode=mode, rewrite=rewrite, append=APPEND,
                    annotation=ANNOTATION)
    return driver.run(split_every(upstream, size))


def sdk_stream(out: bytes) -> tuple[Any, list[Any]]:
    client = anthropic_client(out)
    with client.messages.stream(model="claude-x", max_tokens=100, messages=MESSAGES) as stream:
        seen = list(stream)
        return stream.get_final_message(), seen


def test_sdk_stream_sees_rewrite_append_and_annotation() -> None:
    final, seen = sdk_stream(guarded(anthropic_stream()))
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Be kind." and final.content[0].signature == "c2ln"
    assert final.content[1].text == REWRITTEN + APPEND
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 42
    [delta] = [e for e in seen if e.type == "message_delta"]
    assert delta.model_extra == {"guardrail": ANNOTATION}
    assert seen[-1].type == "message_stop"
    text_events = [e for e in seen if e.type == "text"]
    assert "".join(e.text for e in text_events) == REWRITTEN + APPEND


def test_sdk_stream_append_after_tool_use_goes_into_a_new_text_block() -> None:
    final, _ = sdk_stream(guarded(anthropic_stream(tool_last=True)))
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "text"]
    assert final.content[1].text == REWRITTEN
    assert final.content[2].input == {"q": "help"}
    assert final.content[3].text == APPEND
    assert final.stop_reason == "tool_use"


def test_sdk_raw_events_in_pass_mode() -> None:
    client = anthropic_client(guarded(anthropic_stream(), mode="pass"))
    raw = list(client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES,
                                      stream=True))
    deltas = [e.delta.text for e in raw if e.type == "content_block_delta"
              and e.delta.type == "text_delta"]
    assert "".join(deltas) == REPLY + APPEND


def test_initial_text_in_block_start_is_guarded_too() -> None:
    upstream = sse_events([
        ("message_start", {"type": "message_start", "message": {
            "id": "m", "type": "message", "role": "assistant", "content": [], "model": "c",
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1,
                                                                  "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": " there."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"}),
    ])
    out = Driver(MessagesStream(), rewrite=str.upper).run([upstream])
    final, _ = sdk_stream(out)
    assert final.content[0].text == "HELLO THERE."


def test_broken_off_stream_ends_cleanly() -> None:
    upstream = anthropic_stream()
    cut = upstream[: upstream.index(b"event: content_block_stop\ndata: {\"type\": "
                                     b"\"content_block_stop\", \"index\": 1}")]
    driver = Driver(MessagesStream(), rewrite=rewrite, append=APPEND, annotation=ANNOTATION)
    out = driver.run([cut])
    assert out.endswith(b"event: message_stop\ndata: " + json.dumps(
        {"type": "message_stop", "guardrail": ANNOTATION}, separators=(",", ":")).encode()
        + b"\n\n")
    final, _ = sdk_stream(out)
    assert final.content[1].text == REWRITTEN + APPEND


def test_stream_cut_after_message_delta_gets_its_message_stop() -> None:
    upstream = anthropic_stream()
    cut_at = upstream.index(b"event: message_stop")
    out = guarded(upstream[:cut_at])
    assert out.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    assert out.count(b"message_stop") == 2  # the event line and its data
    final, seen = sdk_stream(out)
    assert final.content[1].text == REWRITTEN + APPEND and seen[-1].type == "message_stop"


def test_error_event_and_unknown_events_pass_untouched() -> None:
    extra = (b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": "
             b"\"overloaded_error\", \"message\": \"Overloaded\"}}\n\n"
             b"event: brand_new\ndata: {\"type\": \"brand_new\"}\n\n"
             b"event: content_block_delta\ndata: {broken\n\n")
    out = Driver(MessagesStream()).run([extra], clean_end=False)
    assert out == extra


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), max_size=20))
def test_property_chunk_boundaries_never_change_the_output(cuts: list[int]) -> None:
    upstream = anthropic_stream(tool_last=True)
    driver = Driver(MessagesStream(), rewrite=rewrite, append=APPEND, annotation=ANNOTATION)
    out = driver.run(cut(upstream, cuts))
    assert out == guarded(anthropic_stream(tool_last=True), size=len(upstream))


def test_a_text_block_followed_by_a_text_block_says_the_text_goes_on() -> None:
    def start(index: int, kind: str) -> tuple[str, Any]:
        block = {"type": kind, "text": ""} if kind == "text" else {
            "type": kind, "id": "t", "name": "f", "input": {}}
        return "content_block_start", {"type": "content_block_start", "index": index,
                                       "content_block": block}

    def stop(index: int) -> tuple[str, Any]:
        return "content_block_stop", {"type": "content_block_stop", "index": index}

    def delta(index: int, text: str) -> tuple[str, Any]:
        return "content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": {"type": "text_delta", "text": text}}

    upstream = sse_events([
        start(0, "text"), delta(0, "I will al"), stop(0), ("ping", {"type": "ping"}),
        start(1, "text"), delta(1, "ways stay."), stop(1),
        start(2, "tool_use"), stop(2),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
    ])
    codec = MessagesStream()
    items = [item for event in events(upstream) for item in codec.feed(event)]
    ends = [item for item in items if isinstance(item, TextEnd)]
    assert ends == [TextEnd(0, 0, into=1), TextEnd(0, 1)]  # block 1 is followed by a tool
    first = items.index(TextEnd(0, 0, into=1))
    assert isinstance(items[first - 1], Forward) and items[first - 1].event.event == "ping"
    assert [type(i).__name__ for i in items[first + 1 : first + 3]] == ["Forward", "Forward"]
