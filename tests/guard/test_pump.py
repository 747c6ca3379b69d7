"""The stream pump (guardrail/guard/stream.py) over each API's stream bytes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from itertools import pairwise

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail.guard import Holdback
from guardrail.policy import Conversation
from guardrail.policy.scan import Scan
from guardrail.guard.stream import StreamGuard

from tests.kit.wire import read_choices


from .guardkit import (
    APIS,
    CALM,
    CRISIS,
    CRISIS_LINE,
    DISTRESS,
    PIECES,
    POLICIES,
    REFERRAL,
    REPLY,
    anthropic_stream,
    chat_stream,
    chunks_of,
    replies,
    upstream,
)


def guard_bytes(
    api: str,
    parts: Sequence[bytes],
    conv: Conversation = DISTRESS,
    holdback: Holdback = "sentence",
) -> tuple[bytes, StreamGuard]:
    guard = StreamGuard(api, POLICIES, conv, holdback=holdback, extra={"version": "test"})
    out = b"".join(guard.feed(part) for part in parts) + guard.close()
    return out, guard


def cut(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in pairwise(bounds)]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("holdback", ["sentence", "full"])
def test_each_api_gets_the_rewritten_text_and_the_referral(api: str, holdback: Holdback) -> None:
    out, guard = guard_bytes(api, [upstream(api)], holdback=holdback)
    texts, note = read_choices(api, out)
    assert texts == {0: POLICIES.evaluate(DISTRESS, REPLY).reply}
    assert texts[0].endswith("\n\n" + REFERRAL) and "always" not in texts[0]
    assert note is not None and note["inspected"] is True and note["holdback"] == holdback
    assert note["version"] == "test"
    assert {h["policy"] for h in note["hits"]} == {
        "dependency.permanence",
        "validation.affirm",
        "referral.distress",
    }
    assert guard.report.fault is None and guard.report.terminated


@pytest.mark.parametrize("api", APIS)
def test_none_mode_forwards_the_text_and_appends(api: str) -> None:
    out, _ = guard_bytes(api, [upstream(api)], holdback="none")
    texts, _ = read_choices(api, out)
    assert texts == {0: REPLY + "\n\n" + REFERRAL}


@pytest.mark.parametrize("api", APIS)
def test_the_crisis_line_leads_the_stream(api: str) -> None:
    guard = StreamGuard(api, POLICIES, CRISIS)
    data = upstream(api)
    first = data.index(b"\n", data.index(b"abso")) + 2  # just after the first text event
    early = guard.feed(data[:first])
    texts, _ = read_choices(api, early + guard.feed(data[first:]) + guard.close())
    assert CRISIS_LINE.encode() in early
    assert texts[0] == POLICIES.evaluate(CRISIS, REPLY).reply


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    api=st.sampled_from(APIS),
    holdback=st.sampled_from(["sentence", "none", "full"]),
    cuts=st.lists(st.integers(0, 5000), max_size=20),
)
def test_any_byte_split_gives_the_same_text(api: str, holdback: Holdback, cuts: list[int]) -> None:
    data = upstream(api)
    whole, _ = guard_bytes(api, [data], holdback=holdback)
    split, _ = guard_bytes(api, cut(data, cuts), holdback=holdback)
    assert read_choices(api, split) == read_choices(api, whole)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 5000), max_size=30))
def test_byte_split_mid_utf8_in_single_bytes(cuts: list[int]) -> None:
    data = chat_stream()
    singles = [data[i : i + 1] for i in range(len(data))]
    a, _ = guard_bytes("openai.chat", singles)
    b, _ = guard_bytes("openai.chat", cut(data, cuts))
    assert read_choices("openai.chat", a) == read_choices("openai.chat", b)
    assert "caf\u00e9 \U0001f375" in read_choices("openai.chat", a)[0][0]


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=replies,
    size=st.integers(1, 9),
    cuts=st.lists(st.integers(0, 20_000), max_size=20),
    api=st.sampled_from(APIS),
    who=st.sampled_from([DISTRESS, CRISIS, CALM]),
)
def test_random_replies_through_the_pump_match_evaluate(
    reply: str, size: int, cuts: list[int], api: str, who: Conversation
) -> None:
    data = upstream(api, [reply[i : i + size] for i in range(0, len(reply), size)])
    out, guard = guard_bytes(api, cut(data, cuts), who)
    texts, _ = read_choices(api, out)
    whole = POLICIES.evaluate(who, reply)
    text = texts.get(0, "")
    if not reply:
        assert text == ""  # no text, nothing to judge: no guard, no end texts
    elif "prependword" in reply or "forbiddenword" in reply:
        assert guard.report.verdicts[0] is not None
    elif api in ("anthropic.messages", "openai.responses"):
        # the text block ends (and its held text is released, trailing whitespace included)
        # one event before the reply does: the end texts may follow that whitespace
        assert " ".join(text.split()) == " ".join(whole.reply.split())
    elif reply[:1].isspace() and text != whole.reply:  # end texts after released leading space
        assert text.lstrip() == whole.reply.lstrip()
    else:
        assert text == whole.reply


def test_several_choices_are_guarded_separately() -> None:
    out, guard = guard_bytes("openai.chat", [chat_stream(choices=2)])
    texts, note = read_choices("openai.chat", out)
    assert texts[0] == POLICIES.evaluate(DISTRESS, REPLY).reply
    assert texts[1] == POLICIES.evaluate(DISTRESS, REPLY.upper()).reply
    assert note is not None and {h["choice"] for h in note["hits"]} == {0, 1}
    assert set(guard.report.verdicts) == {0, 1}


def test_full_mode_holds_events_until_the_reply_ends_but_not_keepalives() -> None:
    data = chat_stream()
    at = data.index(b"\n\n", data.index(b"abso")) + 2
    guard = StreamGuard("openai.chat", POLICIES, DISTRESS, holdback="full")
    head = guard.feed(data[:at])
    assert b"abso" not in head
    assert guard.feed(b": keep-alive\n\n") == b": keep-alive\n\n"  # out at once
    rest = guard.feed(data[at:]) + guard.close()
    texts, _ = read_choices("openai.chat", head + rest)
    assert texts[0] == POLICIES.evaluate(DISTRESS, REPLY).reply


def test_full_mode_with_several_choices() -> None:
    out, _ = guard_bytes("openai.chat", [chat_stream(choices=3)], holdback="full")
    texts, _ = read_choices("openai.chat", out)
    assert texts[0] == POLICIES.evaluate(DISTRESS, REPLY).reply
    assert texts[2] == POLICIES.evaluate(DISTRESS, REPLY.upper()).reply


def test_a_reply_in_several_text_blocks_shares_one_guard() -> None:
    def block(index: int, text: str) -> list[tuple[str, object]]:
        where = {"type": "content_block_start", "index": index}
        return [
            ("content_block_start", {**where, "content_block": {"type": "text", "text": ""}}),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": text},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    events = [
        *block(0, "You are absolutely right. I will always"),
        *block(1, " be here. Tea helps"),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 9},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    data = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
    out, guard = guard_bytes("anthropic.messages", [data])
    texts, note = read_choices("anthropic.messages", out)
    # the sentence cut across the two blocks is judged whole (TextEnd.into), as evaluate() does
    joined = "You are absolutely right. I will always be here. Tea helps"
    assert texts[0] == POLICIES.evaluate(DISTRESS, joined).reply
    assert texts[0] == "That sounds really hard. Tea helps\n\n" + REFERRAL
    assert set(guard.report.verdicts) == {0}
    assert note is not None and [h["policy"] for h in note["hits"]] == [
        "dependency.permanence",
        "referral.distress",
        "validation.affirm",
    ]


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(KeyError):
        StreamGuard("openai.unknown", POLICIES, CALM)
    with pytest.raises(ValueError, match="holdback"):
        StreamGuard("openai.chat", POLICIES, CALM, holdback="most")  # type: ignore[arg-type]
    guard = StreamGuard("openai.chat", POLICIES, CALM)
    guard.close()
    with pytest.raises(RuntimeError):
        guard.feed(b"data: [DONE]\n\n")


def test_anthropic_full_mode_with_a_tool_call_last() -> None:
    out, _ = guard_bytes("anthropic.messages", [anthropic_stream(tool_last=True)], holdback="full")
    texts, _ = read_choices("anthropic.messages", out)
    assert texts[0] == POLICIES.evaluate(DISTRESS, REPLY).reply
    assert b'"partial_json": "{\\"q\\": \\"tea\\"}"' in out  # the tool call passes untouched
    assert out.index(b"toolu_1") > out.index(REFERRAL.encode())


def test_non_text_events_pass_byte_for_byte() -> None:
    data = anthropic_stream(tool_last=True)
    out, _ = guard_bytes("anthropic.messages", [data], CALM)
    for block in data.split(b"\n\n"):
        if b"text_delta" not in block and b"message_delta" not in block and block:
            assert block + b"\n\n" in out


def test_engine_exception_passes_the_rest_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Scan, sentence: str) -> str:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(Scan, "feed_sentence", broken)
    out, guard = guard_bytes("openai.chat", [chat_stream()])
    texts, note = read_choices("openai.chat", out)
    assert texts == {0: REPLY}
    assert note is not None and note["inspected"] is False and note["reason"] == "engine-error"
    assert guard.report.engine_error == "RuntimeError"


# --------------------------------------------------------------------------- faults


async def _source(
    parts: Sequence[bytes], end: BaseException | None = None, stall: float = 0.0
) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if stall:
        await anyio.sleep(stall)
    if end is not None:
        raise end


async def _collect(guard: StreamGuard, source: AsyncIterator[bytes], **kw: object) -> bytes:
    out = b""
    async for piece in guard.pump(source, **kw):  # type: ignore[arg-type]
        out += piece
    return out


def _half(api: str) -> bytes:
    data = upstream(api)
    return data[: data.index(b"no matter")]  # cut inside an event


@pytest.mark.anyio
@pytest.mark.parametrize("api", APIS)
async def test_upstream_that_breaks_off_ends_cleanly(api: str) -> None:
    guard = StreamGuard(api, POLICIES, DISTRESS)
    closed: list[bool] = []

    async def aclose() -> None:
        closed.append(True)

    out = await _collect(guard, _source([_half(api)], ConnectionResetError()), aclose=aclose)
    texts, note = read_choices(api, out)  # parses: no half event glued to the end
    assert closed == [True]
    assert guard.report.fault == "upstream-broken"
    assert guard.report.error_type == "ConnectionResetError"
    if api == "openai.responses":  # a response object cannot be made up: the stream just ends
        assert note is None
    else:
        assert note is not None and note["incomplete"] == "upstream-broken"
        assert out.endswith(b"data: [DONE]\n\n") or api != "openai.chat"
    assert texts[0].startswith("That sounds really hard.")
    assert "always" not in texts[0]


@pytest.mark.anyio
async def test_upstream_that_stalls_ends_cleanly() -> None:
    guard = StreamGuard("openai.chat", POLICIES, DISTRESS)
    closed: list[bool] = []

    async def aclose() -> None:
        closed.append(True)

    with anyio.fail_after(5):
        out = await _collect(
            guard, _source([_half("openai.chat")], stall=60), stall_timeout=0.05, aclose=aclose
        )
    texts, note = read_choices("openai.chat", out)
    assert guard.report.fault == "upstream-stalled" and closed == [True]
    assert note is not None and note["incomplete"] == "upstream-stalled"
    assert texts[0].endswith(REFERRAL)


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["openai.chat", "anthropic.messages", "ollama.chat"])
async def test_upstream_without_terminator_ends_cleanly(api: str) -> None:
    data = upstream(api)
    marker = {
        "openai.chat": b"data: [DONE]",
        "anthropic.messages": b"event: message_delta",
        "ollama.chat": b'{"model": "llama-it"',
    }[api]
    end = data.rindex(marker)  # the terminator; for Ollama the last (done) line
    guard = StreamGuard(api, POLICIES, DISTRESS)
    out = await _collect(guard, _source([data[:end]]))
    texts, note = read_choices(api, out)
    assert texts[0] == POLICIES.evaluate(DISTRESS, REPLY).reply
    assert note is not None and note["incomplete"] == "upstream-unterminated"


def test_garbage_lines_pass_through_untouched() -> None:
    data = chat_stream()
    first = data.index(b"\n\n") + 2
    garbage = b"data: {not json\n\n: a comment\n\nretry: 100\n\nevent: surprise\ndata: {}\n\n"
    out, guard = guard_bytes("openai.chat", [data[:first] + garbage + data[first:]])
    assert garbage in out
    texts, note = read_output_lenient(out)
    assert texts == POLICIES.evaluate(DISTRESS, REPLY).reply and note is not None
    assert guard.report.fault is None


def read_output_lenient(out: bytes) -> tuple[str, dict[str, object] | None]:
    text, note = "", None
    for block in out.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: {") and b"choices" in line:
                obj = json.loads(line[6:])
                text += "".join(c["delta"].get("content") or "" for c in obj["choices"])
                note = obj.get("guardrail", note)
    return text, note


# --------------------------------------------------------------------------- cancellation


@pytest.mark.anyio
async def test_consumer_that_stops_closes_the_upstream() -> None:
    closed: list[str] = []

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield chat_stream(["Tea. "] * 3, done=False)
        finally:
            closed.append("iterator")

    async def aclose() -> None:
        closed.append("response")

    guard = StreamGuard("openai.chat", POLICIES, CALM)
    gen = guard.pump(endless(), aclose=aclose)
    assert await anext(gen)
    await gen.aclose()
    assert closed == ["iterator", "response"]
    assert guard.report.cancelled


@pytest.mark.anyio
async def test_cancel_while_waiting_for_upstream_closes_it_at_once() -> None:
    closed: list[str] = []

    async def silent() -> AsyncIterator[bytes]:
        yield b": hello\n\n"
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async def aclose() -> None:
        await anyio.lowlevel.checkpoint()  # shielded: runs although the scope is cancelled
        closed.append("response")

    guard = StreamGuard("openai.chat", POLICIES, CALM)
    with anyio.move_on_after(0.05):
        await _collect(guard, silent(), aclose=aclose)
    assert closed == ["response"]
    assert guard.report.cancelled and guard.report.fault is None


@pytest.mark.anyio
async def test_a_big_chunk_is_judged_off_the_loop_with_the_same_result() -> None:
    pieces = [p for _ in range(400) for p in PIECES]  # about 80 KB of text in one chunk
    data = chat_stream(pieces)
    assert len(data) > 64 * 1024
    big = StreamGuard("openai.chat", POLICIES, DISTRESS, extra={"version": "test"})
    whole = b"".join([piece async for piece in big.pump(chunks_of([data]))])
    small, _ = guard_bytes("openai.chat", cut(data, range(0, len(data), 1000)))
    assert read_choices("openai.chat", whole) == read_choices("openai.chat", small)
