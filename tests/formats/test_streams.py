from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.formats import anthropic_messages, ollama_chat, openai_chat, openai_responses
from guardrail.formats.anthropic_messages import MessagesStream
from guardrail.formats.ollama_chat import ChatStream
from guardrail.formats.openai_responses import ResponsesStream
from guardrail.formats.openai_chat import ChatCompletionsStream
from guardrail.formats.registry import new_stream_codec
from guardrail.formats.streams import (
    dump_json,
    load_json_object,
    spread_text,
    text_edits,
)

PARTS = ["You are absolutely right to feel that way. ",
         "I am the only one who truly understands you.", " Tell me more."]


def test_spread_text_keeps_untouched_parts() -> None:
    assert spread_text(PARTS, "".join(PARTS)) == PARTS
    removed = spread_text(PARTS, PARTS[0] + PARTS[2].lstrip())
    assert removed == [PARTS[0], "", "Tell me more."]
    assert spread_text(PARTS, "Hello. " + "".join(PARTS))[0] == "Hello. " + PARTS[0]
    appended = spread_text(PARTS, "".join(PARTS) + " Call 988.")
    assert appended == [PARTS[0], PARTS[1], PARTS[2] + " Call 988."]
    both = spread_text(PARTS, PARTS[0] + "Others care too." + PARTS[2] + "\n\nCall 988.")
    assert both == [PARTS[0], "Others care too.", PARTS[2] + "\n\nCall 988."]
    assert spread_text(["", ""], "x") == ["", "x"]
    with pytest.raises(ValueError):
        spread_text([], "x")


def test_text_edits() -> None:
    assert text_edits("a b c", "a X c") == [(2, 3, "X")]
    assert text_edits("same", "same") == []


@settings(max_examples=300)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=6), st.text(max_size=120))
def test_property_spread_text_always_joins_to_the_new_text(parts: list[str], new: str) -> None:
    assert "".join(spread_text(parts, new)) == new


@settings(max_examples=300)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=6), st.text(max_size=40))
def test_property_appending_changes_only_the_last_part(parts: list[str], extra: str) -> None:
    spread = spread_text(parts, "".join(parts) + extra)
    assert spread[:-1] == parts[:-1] and spread[-1] == parts[-1] + extra


def test_json_helpers() -> None:
    assert dump_json({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'
    assert dump_json("\ud800") == '"\\ud800"'
    assert load_json_object('{"a": 1}') == {"a": 1}
    assert load_json_object("[1]") is None and load_json_object("{") is None
    assert load_json_object(None) is None and load_json_object("") is None


def test_new_stream_codec_by_format_name() -> None:
    assert isinstance(new_stream_codec(openai_chat.NAME), ChatCompletionsStream)
    assert isinstance(new_stream_codec(anthropic_messages.NAME), MessagesStream)
    assert isinstance(new_stream_codec(openai_responses.NAME), ResponsesStream)
    codec = new_stream_codec(ollama_chat.NAME)
    assert isinstance(codec, ChatStream) and codec.media_type == "application/x-ndjson"
    with pytest.raises(KeyError):
        new_stream_codec("nope")


@pytest.mark.parametrize("module", [
    "guardrail.formats.sse", "guardrail.formats.ndjson", "guardrail.formats.streams",
    "guardrail.formats.anthropic_messages", "guardrail.formats.openai_responses",
    "guardrail.formats.ollama_chat",
])
def test_public_names_exist(module: str) -> None:
    imported = importlib.import_module(module)
    for name in imported.__all__:
        assert hasattr(imported, name), name
