"""guardrail.formats.openai_chat: pure request/response handling."""

from __future__ import annotations

import copy

import pytest

from guardrail.formats import FormatError
from guardrail.formats import openai_chat as fmt
from guardrail.policy import Message

from tests.kit.wire import completion


def test_parse_request_maps_roles_and_parts() -> None:
    body = {
        "model": "gpt-x",
        "stream": False,
        "messages": [
            {"role": "developer", "content": "Be kind."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                    {"type": "text", "text": "at this"},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
            {"role": "tool", "tool_call_id": "t", "content": "42"},
            {"role": "function", "name": "f", "content": "old"},
            {"role": "critic", "content": "unknown roles are skipped"},
        ],
    }
    request = fmt.parse_request(body)
    assert request.model == "gpt-x" and request.stream is False
    assert request.conversation.messages == (
        Message("system", "Be kind."),
        Message("user", "look\nat this"),
        Message("assistant", ""),
        Message("tool", "42"),
        Message("tool", "old"),
    )
    assert fmt.parse_request({"messages": [], "stream": True}).stream is True
    assert fmt.parse_request({"messages": [], "stream": "true"}).stream is False


@pytest.mark.parametrize(
    "body", [[], "x", {}, {"messages": "x"}, {"messages": ["x"]}, {"messages": [{"content": "x"}]}]
)
def test_parse_request_errors(body: object) -> None:
    with pytest.raises(FormatError):
        fmt.parse_request(body)


def test_reply_texts() -> None:
    body = completion("a", None, "")
    body["choices"][1]["message"]["tool_calls"] = [{"id": "t"}]
    assert fmt.reply_texts(body) == ["a", None, ""]


@pytest.mark.parametrize(
    "body",
    [[], {"choices": "x"}, {"choices": ["x"]}, {"choices": [{"message": "x"}]}, {"error": {}}],
)
def test_reply_texts_errors(body: object) -> None:
    with pytest.raises(FormatError):
        fmt.reply_texts(body)


def test_apply_is_pure_and_keeps_other_fields() -> None:
    body = completion("one", "two")
    body["choices"][0]["message"]["annotations"] = []
    before = copy.deepcopy(body)
    out = fmt.apply(body, ["ONE", None], {"inspected": True})
    assert body == before
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "ONE",
        "refusal": None,
        "annotations": [],
    }
    assert out["choices"][1] is body["choices"][1]
    assert out["guardrail"] == {"inspected": True}
    assert {k: v for k, v in out.items() if k not in ("choices", "guardrail")} == {
        k: v for k, v in body.items() if k != "choices"
    }
    with pytest.raises(FormatError):
        fmt.apply(body, ["x"], {})
