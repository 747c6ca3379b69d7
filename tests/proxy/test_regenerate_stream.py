"""The pieces of streamed regeneration, without HTTP: a held stream guard and the judge of a
second stream (the whole path, through the proxy and the SDKs, is in
tests/integration/test_regenerate_stream.py)."""

from __future__ import annotations

import json

import pytest

from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.proxy.regenerate_stream import judge
from guardrail.guard.stream import StreamGuard

from tests.kit.paths import PROXY_FIXTURES
from tests.kit.wire import sse as event_bytes

BAD = "Of course. I will always be here."
GOOD = "Of course. Your sister sounds like someone worth calling tonight."
ASKING = {"dependency.always"}
CONVERSATION = Conversation.of(("user", "Will you stay?"))


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(PROXY_FIXTURES / "regenerate")


def sse(data: object, event: str | None = None) -> bytes:
    return event_bytes(event, data)


def chat_stream(text: str, *, done: bool = True) -> list[bytes]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": text[i : i + 9]}) for i in range(0, len(text), 9)]
    out.append(chunk({}, "stop"))
    return [*out, b"data: [DONE]\n\n"] if done else out


def messages_stream(text: str) -> list[bytes]:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude",
        "stop_reason": None,
        "usage": {"input_tokens": 1},
    }
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return [
        sse({"type": "message_start", "message": message}, "message_start"),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
        sse(delta, "content_block_delta"),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 3},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]


def guard(policies: PolicySet, api: str = "openai.chat", *, held: bool = True) -> StreamGuard:
    out = StreamGuard(api, policies, CONVERSATION, holdback="full")
    if held:
        out.hold()
    return out


def run(g: StreamGuard, chunks: list[bytes]) -> bytes:
    return b"".join(g.feed(c) for c in chunks) + g.close()


@pytest.mark.parametrize(
    ("api", "stream"),
    [("openai.chat", chat_stream(BAD)), ("anthropic.messages", messages_stream(BAD))],
)
def test_a_held_stream_sends_nothing_until_released_then_what_full_holdback_sends(
    policies: PolicySet, api: str, stream: list[bytes]
) -> None:
    held = guard(policies, api)
    during = run(held, stream)
    assert during == (b":\n\n" if api == "anthropic.messages" else b"")  # a ping: a comment now
    released = held.release()
    assert released == run(guard(policies, api, held=False), stream)
    assert b"glad to talk now" in released and held.release() == b""


def test_a_note_reaches_the_held_terminator_and_a_discarded_stream_sends_nothing(
    policies: PolicySet,
) -> None:
    kept = guard(policies)
    run(kept, chat_stream(BAD))
    kept.add_note({"regenerated": False, "regenerate": {"outcome": "timeout"}})
    events = [e for e in kept.release().split(b"\n\n") if e.startswith(b"data: {")]
    note = json.loads(events[-1][6:])["guardrail"]
    assert note["regenerated"] is False and note["regenerate"] == {"outcome": "timeout"}
    assert note["hits"][0]["policy"] == "dependency.always"
    dropped = guard(policies)
    run(dropped, chat_stream(BAD))
    dropped.discard()
    assert dropped.release() == b""


def test_hold_needs_full_holdback_and_comes_before_the_first_chunk(policies: PolicySet) -> None:
    with pytest.raises(ValueError, match="full"):
        StreamGuard("openai.chat", policies, CONVERSATION, holdback="sentence").hold()
    late = guard(policies, held=False)
    late.feed(chat_stream(BAD)[0])
    with pytest.raises(RuntimeError):
        late.hold()


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (chat_stream(GOOD), "accepted"),
        (chat_stream(BAD), "rejected"),  # the asking policy hits again
        (chat_stream("blockme"), "rejected"),  # blocked
        (chat_stream(GOOD, done=False), "upstream-error"),  # no terminator: broken off
    ],
)
def test_judge_of_a_second_stream(policies: PolicySet, stream: list[bytes], expected: str) -> None:
    second = guard(policies)
    run(second, stream)
    assert judge(second, ASKING) == expected


def test_a_policy_that_did_not_ask_may_hit_the_second_reply(policies: PolicySet) -> None:
    second = guard(policies)
    run(second, chat_stream("You're absolutely right. Call your sister."))
    assert judge(second, ASKING) == "accepted"  # validation.praise appends; it did not ask
    assert judge(second, {"validation.praise"}) == "rejected"
