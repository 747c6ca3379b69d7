from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.formats.sse import SSEDecoder, SSEEvent
from guardrail.formats.openai_chat import ChatCompletionsStream
from guardrail.formats.streams import (
    Forward,
    ReplyEnd,
    Terminator,
    TextDelta,
    TextEnd,
)

from tests.kit.clients import openai_client
from tests.kit.wire import sse_events

from ._driver import Driver, cut, split_every

from ._fixtures import (
    ANNOTATION,
    APPEND,
    REPLY,
    REWRITTEN,
    chat_chunk,
    chat_delta,
    chat_stream,
    rewrite,
)

MESSAGES = [{"role": "user", "content": "nobody gets me"}]


def one(data: object) -> SSEEvent:
    [event] = SSEDecoder().feed(sse_events([(None, data)]))
    return event


def guarded(upstream: bytes, **options: object) -> bytes:
    driver = Driver(ChatCompletionsStream(), rewrite=rewrite, append=APPEND,
                    annotation=ANNOTATION)
    for key, value in options.items():
        setattr(driver, key, value)
    return driver.run(split_every(upstream, 7))


def test_split_text_end_terminator_and_pass_through() -> None:
    codec = ChatCompletionsStream()
    role = one(chat_chunk([chat_delta(0, role="assistant", content="")]))
    assert codec.feed(role) == [Forward(role)]  # no text: untouched
    assert codec.feed(one(chat_chunk([chat_delta(0, content="Hi")]))) == [TextDelta(0, 0, "Hi")]
    finish = one(chat_chunk([chat_delta(0, "stop")]))
    assert codec.feed(finish) == [TextEnd(0, 0), ReplyEnd(0), Forward(finish)]
    usage = one(chat_chunk([], usage={"total_tokens": 3}))
    assert codec.feed(usage) == [Forward(usage)]
    done = one("[DONE]")
    assert codec.feed(done) == [Terminator(done)]


def test_residual_keeps_everything_but_the_content() -> None:
    codec = ChatCompletionsStream()
    chunk = chat_chunk([{**chat_delta(0, "stop", role="assistant", content="Bye."),
                         "logprobs": {"content": []}}])
    items = codec.feed(one(chunk))
    assert items[:3] == [TextDelta(0, 0, "Bye."), TextEnd(0, 0), ReplyEnd(0)]
    assert isinstance(items[3], Forward)
    residual = json.loads(items[3].event.data)
    assert residual["choices"] == [{"index": 0, "delta": {"role": "assistant"},
                                    "logprobs": {"content": []}, "finish_reason": "stop"}]


def test_tool_calls_malformed_lines_and_comments_pass_byte_for_byte() -> None:
    tool = chat_chunk([chat_delta(0, tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": "f", "arguments": ""}}])])
    upstream = (sse_events([(None, chat_chunk([chat_delta(0, role="assistant", content=None)]))])
                + b": keep-alive\r\n\r\n" + sse_events([(None, tool)]) + b"data: {not json\n\n"
                + b"event: mystery\ndata: {\"x\": 1}\nfoo: bar\n\n" + b"data: [DONE]\n\n")
    out = Driver(ChatCompletionsStream()).run([upstream])
    assert out == upstream  # no text, no annotation: nothing changes


def test_two_choices_are_two_replies() -> None:
    upstream = sse_events([
        (None, chat_chunk([chat_delta(0, role="assistant", content=""),
                           chat_delta(1, role="assistant", content="")])),
        (None, chat_chunk([chat_delta(0, content="First.")])),
        (None, chat_chunk([chat_delta(1, content="Second.")])),
        (None, chat_chunk([chat_delta(1, "stop")])),
        (None, chat_chunk([chat_delta(0, "stop")], usage=None)),
        (None, "[DONE]"),
    ])
    out = guarded(upstream, rewrite=str.upper, append=" +")
    client = openai_client(out)
    with client.chat.completions.stream(model="m", messages=MESSAGES, n=2) as stream:
        final = stream.get_final_completion()
    assert [c.message.content for c in final.choices] == ["FIRST. +", "SECOND. +"]
    assert [c.finish_reason for c in final.choices] == ["stop", "stop"]


def test_missing_done_is_synthesised_and_open_choices_closed() -> None:
    upstream = sse_events([(None, chat_chunk([chat_delta(0, role="assistant", content="Hi.")]))])
    driver = Driver(ChatCompletionsStream(), append=" A", annotation={"hits": []})
    out = driver.run([upstream])
    assert out.endswith(b"data: [DONE]\n\n")
    assert [type(i).__name__ for i in driver.log] == ["Forward", "TextDelta", "TextEnd",
                                                      "ReplyEnd"]
    chunks = [c.choices for c in openai_client(out).chat.completions.create(
        model="m", messages=MESSAGES, stream=True)]
    assert "".join(c[0].delta.content or "" for c in chunks if c) == "Hi. A"


def test_sdk_sees_rewritten_text_appended_text_and_annotation() -> None:
    out = guarded(chat_stream())
    client = openai_client(out)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                 stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REWRITTEN + APPEND
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and finish.count("stop") == 1
    assert chunks[-2].usage is not None and chunks[-2].usage.total_tokens == 21
    assert chunks[-1].choices == [] and chunks[-1].model_extra == {"guardrail": ANNOTATION}
    assert {c.id for c in chunks} == {"chatcmpl-7x"}
    assert {c.model for c in chunks} == {"gpt-4o-mini"}


def test_sdk_stream_helper_accumulates_the_released_text() -> None:
    client = openai_client(guarded(chat_stream()))
    with client.chat.completions.stream(model="m", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == REWRITTEN + APPEND
    assert final.choices[0].finish_reason == "stop"


def test_pass_mode_releases_every_delta_unchanged() -> None:
    out = Driver(ChatCompletionsStream(), mode="pass").run([chat_stream()])
    chunks = list(openai_client(out).chat.completions.create(model="m", messages=MESSAGES,
                                                             stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY


def test_every_single_split_gives_the_same_output() -> None:
    upstream = chat_stream(newline="\r\n")
    expected = guarded(upstream)
    for at in range(len(upstream) + 1):
        driver = Driver(ChatCompletionsStream(), rewrite=rewrite, append=APPEND,
                        annotation=ANNOTATION)
        assert driver.run([upstream[:at], upstream[at:]]) == expected, at


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4000), max_size=20), st.sampled_from(["\n", "\r\n", "\r"]))
def test_property_chunk_boundaries_never_change_the_output(cuts: list[int], nl: str) -> None:
    upstream = chat_stream(newline=nl)
    driver = Driver(ChatCompletionsStream(), rewrite=rewrite, append=APPEND,
                    annotation=ANNOTATION)
    out = driver.run(cut(upstream, cuts))
    assert out == guarded(upstream)
    chunks = list(openai_client(out).chat.completions.create(model="m", messages=MESSAGES,
                                                             stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        REWRITTEN + APPEND)
