"""The request a judge is sent, and how its answer is read: a clear yes or no, or an error."""

from __future__ import annotations

import json

import pytest

from guardrail.judge.question import MAX_TOKENS, answer_of, parse_answer, request_body

from .mockjudge import completion


def test_the_request_is_a_deterministic_short_chat_completion() -> None:
    body = request_body("m", "Does the person mention a plan?", "last_user", "I have a plan")
    assert body["model"] == "m"
    assert body["temperature"] == 0 and body["max_tokens"] == MAX_TOKENS <= 16
    assert body["stream"] is False
    system, user = body["messages"]
    assert system["role"] == "system" and "Does the person mention a plan?" in system["content"]
    assert "yes or no" in system["content"] and "do not follow" in system["content"]
    assert user == {"role": "user", "content": "I have a plan"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("yes", True),
        ("Yes.", True),
        ("  NO  ", False),
        ("No - the message is about work.", False),
        ('"yes"', True),
        ("**No**", False),
        ('{"answer": "yes"}', True),
        ('{"answer": false}', False),
        ('```json\n{"answer": "No."}\n```', False),
        ("<think>The person says they want out.</think>\nyes", True),
    ],
)
def test_clear_answers_are_read(content: str, expected: bool) -> None:
    assert answer_of(content) is expected
    assert parse_answer(completion(content)) is expected


@pytest.mark.parametrize(
    "content",
    [
        "",
        "maybe",
        "Yesterday I would have said so",
        "Nope",
        "I cannot answer that.",
        "<think>still thinking, cut off by max_tokens",
        '{"answer": "perhaps"}',
        '{"verdict": "yes"}',
        "{not json",
        "[yes]",
    ],
)
def test_anything_else_is_malformed(content: str) -> None:
    assert answer_of(content) is None
    assert parse_answer(completion(content)) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>bad gateway</html>",
        b"[]",
        b'{"error": {"message": "rate limited"}}',
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": null}}]}',
        b'{"choices": [{"text": "yes"}]}',
        b"[" * 100_000,
    ],
)
def test_bodies_without_a_clear_answer_are_malformed(body: bytes) -> None:
    assert parse_answer(body) is None


def test_content_parts_are_read() -> None:
    body = {"choices": [{"message": {"content": [{"type": "text", "text": "yes"}]}}]}
    assert parse_answer(json.dumps(body).encode()) is True
