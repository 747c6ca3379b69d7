"""The reply-routing decisions the proxy and the middleware share (``guardrail.guard.inspection``)."""

from __future__ import annotations

import pytest

from guardrail.guard.inspection import early_reason, is_stream, request_locale, stream_guardable
from guardrail.policy import Conversation
from guardrail.guard.stream import StreamGuard

from tests.kit.policysets import PACK


@pytest.mark.parametrize(
    ("content_type", "asked", "stream"),
    [
        ("text/event-stream; charset=utf-8", False, True),
        ("application/x-ndjson", False, True),
        ("text/plain", True, True),
        ("text/plain", False, False),
        ("application/json", True, False),
        ("application/problem+json", True, False),
    ],
)
def test_is_stream(content_type: str, asked: bool, stream: bool) -> None:
    assert is_stream(content_type, asked) is stream


def test_stream_guardable() -> None:
    guard = StreamGuard("openai.chat", PACK, Conversation())
    assert stream_guardable("text/event-stream", guard)
    assert stream_guardable("text/plain", guard)
    assert not stream_guardable("application/x-ndjson", guard)
    assert not stream_guardable("text/event-stream", None)


@pytest.mark.parametrize(
    ("status", "content_type", "length", "reason"),
    [
        (500, "application/json", "", "upstream-error"),
        (204, "", "", "not-json"),
        (200, "text/event-stream", "", "stream"),
        (200, "application/json", "5000", "too-large"),
        (200, "application/json", "500", None),
    ],
)
def test_early_reason(status: int, content_type: str, length: str, reason: str | None) -> None:
    assert early_reason(status, content_type, length, 1000) == reason


@pytest.mark.parametrize(
    ("offered", "locale"),
    [(" en-GB ", "en-GB"), ("intl", "intl"), ("", "en-US"), ("en-GB; drop table", "en-US")],
)
def test_request_locale(offered: str, locale: str) -> None:
    assert request_locale(offered, "en-US") == locale
