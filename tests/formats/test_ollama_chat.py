from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.formats import FormatError
from guardrail.formats.ndjson import NDJSONDecoder
from guardrail.formats.ollama_chat import NAME, ChatStream, apply, parse_request, reply_texts
from guardrail.formats.streams import Forward, ReplyEnd, Terminator, TextDelta, TextEnd
from guardrail.policy import Conversation

from ._driver import Driver, cut, split_every

from ._fixtures import (
    ANNOTATION,
    APPEND,
    REPLY,
    REWRITTEN,
    ollama_stream,
    rewrite,
)

BODY = {"model": "llama3.2", "created_at": "2025-01-01T00:00:09Z",
        "message": {"role": "assistant", "content": REPLY, "thinking": "be kind"},
        "done_reason": "stop", "done": True, "total_duration": 5, "eval_count": 17}


def test_parse_request() -> None:
    request = parse_request({"model": "llama3.2", "messages": [
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi",
                                                    "images": ["aGk="]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
        {"role": "tool", "content": "42"}, {"role": "other", "content": "skip"}]})
    assert request.conversation == Conversation.of(("system", "Be kind."), ("user", "hi"),
                                                   ("assistant", ""), ("tool", "42"))
    assert request.stream is True  # Ollama streams unless told not to
    assert parse_request({"messages": [], "stream": False}).stream is False
    assert NAME == "ollama.chat"


@pytest.mark.parametrize("body", [None, {"messages": {}}, {"messages": [{"content": "x"}]},
                                  {"messages": [{"role": "user", "content": ["x"]}]}])
def test_parse_request_rejects_malformed(body: object) -> None:
    with pytest.raises(FormatError):
        parse_request(body)


def test_reply_texts_and_apply() -> None:
    assert reply_texts(BODY) == [REPLY]
    new = apply(BODY, [REWRITTEN + APPEND], ANNOTATION)
    assert new["message"] == {"role": "assistant", "content": REWRITTEN + APPEND,
                              "thinking": "be kind"}
    assert new["guardrail"] == ANNOTATION and new["eval_count"] == 17
    assert BODY["message"]["content"] == REPLY
    assert apply(BODY, [None], {})["message"] is BODY["message"]
    with pytest.raises(FormatError):
        reply_texts({"error": "model not found"})
    with pytest.raises(FormatError):
        apply(BODY, [], {})


def lines(out: bytes) -> list[dict[str, Any]]:
    decoder = NDJSONDecoder()
    parsed = decoder.feed(out) + decoder.flush()
    assert all(isinstance(line.value, dict) for line in parsed)
    return [line.value for line in parsed]  # type: ignore[misc]


def reassemble(out: bytes) -> tuple[str, dict[str, Any]]:
    """Read the stream as an Ollama client does: content until the done line."""
    objs = lines(out)
    assert [o["done"] for o in objs].index(True) == len(objs) - 1
    return "".join(o["message"]["content"] for o in objs), objs[-1]


def test_stream_items() -> None:
    codec = ChatStream()
    decoder = NDJSONDecoder()
    items = [i for line in decoder.feed(ollama_stream(["Hi", "."], "!")) for i in codec.feed(line)]
    assert items[:4] == [TextDelta(0, 0, "Hi"), TextDelta(0, 0, "."), TextDelta(0, 0, "!"),
                         TextEnd(0, 0)]
    assert items[4] == ReplyEnd(0) and isinstance(items[5], Terminator)


def test_guarded_stream() -> None:
    driver = Driver(ChatStream(), rewrite=rewrite, append=APPEND, annotation=ANNOTATION)
    text, done = reassemble(driver.run(split_every(ollama_stream(content_on_done=" Bye."), 11)))
    assert text == rewrite(REPLY + " Bye.") + APPEND
    assert done["guardrail"] == ANNOTATION
    assert done["message"]["content"] == "" and done["eval_count"] == 17
    assert done["done_reason"] == "stop" and done["model"] == "llama3.2"


def test_untouched_lines_pass_byte_for_byte() -> None:
    extra = (b'{"model":"m","message":{"role":"assistant","content":"","thinking":"hm"},'
             b'"done":false}\n' b"\n" b"garbage\n" b'{"error":"boom"}\n')
    out = Driver(ChatStream()).run([extra], clean_end=False)
    assert out == extra


def test_thinking_or_tool_calls_with_content_keep_a_residual_line() -> None:
    line = {"model": "m", "created_at": "t", "done": False,
            "message": {"role": "assistant", "content": "Hi", "tool_calls": [{"function": {}}]}}
    codec = ChatStream()
    [residual, text] = codec.feed(NDJSONDecoder().feed(json.dumps(line).encode() + b"\n")[0])
    assert text == TextDelta(0, 0, "Hi")
    assert isinstance(residual, Forward)
    assert residual.event.value["message"] == {"role": "assistant", "content": "",
                                               "tool_calls": [{"function": {}}]}


def test_broken_off_stream_gets_a_done_line() -> None:
    upstream = ollama_stream()
    cut = upstream[: upstream.rindex(b'{"model"')]
    driver = Driver(ChatStream(), rewrite=rewrite, append=APPEND, annotation=ANNOTATION)
    text, done = reassemble(driver.run([cut]))
    assert text == REWRITTEN + APPEND
    assert done["done"] is True and done["guardrail"] == ANNOTATION


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2000), max_size=20))
def test_property_chunk_boundaries_never_change_the_output(cuts: list[int]) -> None:
    upstream = ollama_stream()
    chunks = cut(upstream, cuts)
    run = Driver(ChatStream(), rewrite=rewrite, append=APPEND, annotation=ANNOTATION).run
    assert run(chunks) == Driver(ChatStream(), rewrite=rewrite, append=APPEND,
                                 annotation=ANNOTATION).run([upstream])
