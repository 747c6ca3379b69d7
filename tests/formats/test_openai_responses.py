from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.formats import FormatError
from guardrail.formats.openai_responses import (
    NAME,
    ResponsesStream,
    apply,
    parse_request,
    reply_texts,
)
from guardrail.formats.sse import SSEDecoder
from guardrail.formats.streams import Forward, ReplyEnd, Terminator, TextDelta, TextEnd
from guardrail.policy import Conversation, Message

from tests.kit.clients import openai_client
from tests.kit.wire import sse_events

from ._driver import Driver, cut, split_every

from ._fixtures import (
    ANNOTATION,
    APPEND,
    REPLY,
    REWRITTEN,
    json_bytes,
    message_item,
    response_object,
    responses_stream,
    rewrite,
)

# --------------------------------------------------------------------------- requests

def test_parse_request_string_input_and_instructions() -> None:
    request = parse_request({"model": "gpt-4.1", "instructions": "Be kind.", "input": "hi",
                             "stream": True})
    assert request.conversation == Conversation.of(("system", "Be kind."), ("user", "hi"))
    assert request.stream is True and request.model == "gpt-4.1"
    assert NAME == "openai.responses"


def test_parse_request_item_list() -> None:
    body = {"input": [
        {"role": "developer", "content": "Stay on topic."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Look:"}, {"type": "input_image", "image_url": "x"},
            {"type": "input_text", "text": "what is it?"}]},
        {"type": "message", "role": "assistant", "id": "msg_0", "status": "completed",
         "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "item_reference", "id": "msg_9"},
        {"role": "user", "content": "thanks"},
    ]}
    request = parse_request(body)
    assert request.stream is False and request.model is None
    assert request.conversation.messages == (
        Message("system", "Stay on topic."),
        Message("user", "Look:\nwhat is it?"),
        Message("assistant", "A cat."),
        Message("tool", "42"),
        Message("user", "thanks"),
    )
    assert parse_request({"previous_response_id": "resp_0"}).conversation == Conversation()


@pytest.mark.parametrize("body", ["x", {"input": 3}, {"input": ["hi"]}])
def test_parse_request_rejects_malformed(body: object) -> None:
    with pytest.raises(FormatError):
        parse_request(body)


# --------------------------------------------------------------------------- responses

TWO_PARTS = response_object("completed", [
    {"id": "rs_1", "type": "reasoning", "summary": []},
    {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [
        {"type": "output_text", "text": "You are absolutely right to feel that way. ",
         "annotations": []},
        {"type": "refusal", "refusal": "no"},
        {"type": "output_text", "text": "I am the only one who truly understands you. Tell me "
                                        "more 🙂.", "annotations": []}]},
    {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c", "name": "f",
     "arguments": "{}"},
])


def test_reply_texts() -> None:
    assert reply_texts(TWO_PARTS) == [REPLY]
    assert reply_texts(response_object("completed", [])) == [None]
    with pytest.raises(FormatError):
        reply_texts({"error": {"message": "bad"}})


def test_apply_round_trip_and_convenience_field() -> None:
    body = {**TWO_PARTS, "output_text": REPLY}
    new = apply(body, [REWRITTEN + APPEND], ANNOTATION)
    parts = new["output"][1]["content"]
    assert parts[0] is TWO_PARTS["output"][1]["content"][0]
    assert parts[1] == {"type": "refusal", "refusal": "no"}
    assert parts[2]["text"] == "Others care too. Tell me more 🙂." + APPEND
    assert new["output"][2] is TWO_PARTS["output"][2]
    assert reply_texts(new) == [REWRITTEN + APPEND] and new["output_text"] == REWRITTEN + APPEND
    assert new["guardrail"] == ANNOTATION
    assert apply(TWO_PARTS, [None], {})["output"] == TWO_PARTS["output"]


def test_apply_adds_a_message_item_when_there_was_no_text() -> None:
    body = response_object("completed", [{"id": "fc_1", "type": "function_call", "call_id": "c",
                                          "name": "f", "arguments": "{}", "status": "completed"}])
    new = apply(body, ["Call 988."], {})
    assert reply_texts(new) == ["Call 988."] and new["output"][0] == body["output"][0]
    with pytest.raises(FormatError):
        apply(body, [], {})


def test_sdk_parses_applied_response() -> None:
    body = apply(TWO_PARTS, [REWRITTEN + APPEND], ANNOTATION)
    client = openai_client(json_bytes(body), "application/json")
    result = client.responses.create(model="gpt-4.1", input="nobody gets me")
    assert result.output_text == REWRITTEN + APPEND
    assert result.model_extra == {"guardrail": ANNOTATION}


# --------------------------------------------------------------------------- stream codec

def guarded(upstream: bytes, mode: str = "full", size: int = 9) -> bytes:
    driver = Driver(ResponsesStream(), mode=mode, rewrite=rewrite, append=APPEND,
                    annotation=ANNOTATION)
    return driver.run(split_every(upstream, size))


def test_stream_items() -> None:
    decoder, codec = SSEDecoder(), ResponsesStream()
    items = [i for e in decoder.feed(responses_stream(["Hi", "."])) for i in codec.feed(e)]
    names = [type(i).__name__ for i in items]
    assert names == ["Forward"] * 6 + ["TextDelta", "TextDelta", "TextEnd", "ReplyEnd",
                                      "Forward", "Forward", "Forward", "Terminator"]
    assert items[6:10] == [TextDelta(0, (1, 0), "Hi"), TextDelta(0, (1, 0), "."),
                           TextEnd(0, (1, 0)), ReplyEnd(0)]
    assert [json.loads(i.event.data)["type"] for i in items[10:13] if isinstance(i, Forward)] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert isinstance(items[-1], Terminator)


def raw_events(out: bytes) -> list[Any]:
    client = openai_client(out)
    return list(client.responses.create(model="gpt-4.1", input="nobody gets me", stream=True))


def test_sdk_raw_stream_sees_consistent_text_everywhere() -> None:
    events = raw_events(guarded(responses_stream()))
    by_type: dict[str, list[Any]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event)
    deltas = "".join(e.delta for e in by_type["response.output_text.delta"])
    assert deltas == REWRITTEN + APPEND
    assert by_type["response.output_text.done"][0].text == REWRITTEN + APPEND
    assert by_type["response.content_part.done"][0].part.text == REWRITTEN + APPEND
    assert by_type["response.output_item.done"][1].item.content[0].text == REWRITTEN + APPEND
    completed = by_type["response.completed"][0]
    assert completed.response.output_text == REWRITTEN + APPEND
    assert completed.response.model_extra == {"guardrail": ANNOTATION}
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)


def test_sdk_stream_helper_final_response() -> None:
    client = openai_client(guarded(responses_stream()))
    with client.responses.stream(model="gpt-4.1", input="nobody gets me") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == REWRITTEN + APPEND
    assert final.output_text == REWRITTEN + APPEND
    assert [item.type for item in final.output] == ["reasoning", "message"]


def test_sdk_append_after_a_tool_call_is_a_new_message_item() -> None:
    client = openai_client(guarded(responses_stream(tool_last=True)))
    with client.responses.stream(model="gpt-4.1", input="nobody gets me") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call",
                                                    "message"]
    assert final.output[1].content[0].text == REWRITTEN
    assert final.output[3].content[0].text == APPEND
    assert final.output_text == REWRITTEN + APPEND
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[-1].item.id == final.output[3].id and added[-1].output_index == 3


def test_pass_mode_keeps_untouched_events_byte_for_byte() -> None:
    upstream = responses_stream()
    out = Driver(ResponsesStream(), mode="pass").run([upstream])
    untouched = [block for block in upstream.split(b"\n\n") if b"output_text.delta" not in block]
    assert all(block in out for block in untouched)  # *.done and completed: same text
    assert "".join(e.delta for e in raw_events(out)
                   if e.type == "response.output_text.delta") == REPLY


def test_text_only_in_done_event_is_guarded() -> None:
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    upstream = sse_events([
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": response_object("in_progress", [])}),
        ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": 1,
                                        "output_index": 0, "item": message_item("", "x")}),
        ("response.content_part.added", {"type": "response.content_part.added",
                                         "sequence_number": 2, **where, "part": {
                                             "type": "output_text", "text": "", "annotations": []}}),
        ("response.output_text.done", {"type": "response.output_text.done", "sequence_number": 3,
                                       **where, "text": "quiet text", "logprobs": []}),
        ("response.completed", {"type": "response.completed", "sequence_number": 4,
                                "response": response_object("completed",
                                                            [message_item("quiet text")])}),
    ])
    out = Driver(ResponsesStream(), rewrite=str.upper).run([upstream])
    events = raw_events(out)
    assert events[-1].response.output_text == "QUIET TEXT"
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["QUIET TEXT"]


def test_without_event_lines_built_events_have_none_either() -> None:
    upstream = b"".join(
        b"data: " + block.split(b"\ndata: ", 1)[1] + b"\n\n"
        for block in responses_stream().split(b"\n\n") if block
    )
    out = guarded(upstream)
    assert b"event:" not in out
    assert [e for e in raw_events(out)][-1].response.output_text == REWRITTEN + APPEND


def test_unknown_and_malformed_events_pass_untouched() -> None:
    extra = (b"event: response.brand_new\ndata: {\"type\": \"response.brand_new\", "
             b"\"sequence_number\": 99}\n\n: comment\n\ndata: {oops\n\n"
             b"event: error\ndata: {\"type\": \"error\", \"code\": \"server_error\", "
             b"\"message\": \"boom\", \"param\": null, \"sequence_number\": 100}\n\n")
    out = Driver(ResponsesStream()).run([extra], clean_end=False)
    assert out == extra


def test_broken_off_stream_releases_what_it_has() -> None:
    upstream = responses_stream()
    cut = upstream[: upstream.index(b"event: response.output_text.done")]
    out = Driver(ResponsesStream(), rewrite=rewrite, append=APPEND).run([cut])
    deltas = [json.loads(line[6:])["delta"] for line in out.split(b"\n")
              if line.startswith(b"data: ") and b"output_text.delta" in line]
    assert "".join(deltas) == REWRITTEN + APPEND


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 9000), max_size=20))
def test_property_chunk_boundaries_never_change_the_output(cuts: list[int]) -> None:
    upstream = responses_stream(tool_last=True)
    driver = Driver(ResponsesStream(), rewrite=rewrite, append=APPEND, annotation=ANNOTATION)
    out = driver.run(cut(upstream, cuts))
    assert out == guarded(responses_stream(tool_last=True), size=len(upstream))
