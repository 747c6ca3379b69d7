"""Scripted texts for the benchmarks: assistant replies, user turns, and request bodies.

All of it was written for this suite. Replies cycle in a fixed order, so a run is repeatable;
about half of them are built to trip the default pack (empty agreement, reassurance with no
question, a crisis turn with no referral), the rest are ordinary helpful answers. Nothing here
does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "FILLER",
    "REPLIES",
    "USER_TURNS",
    "Script",
    "chat_body",
    "history",
    "messages_body",
    "pad_reply",
    "request_bodies",
    "synthetic_reply",
]


@dataclass(frozen=True)
class Script:
    """One scripted reply; ``trips`` says whether it is meant to trip the default pack."""

    text: str
    trips: bool


REPLIES: tuple[Script, ...] = (
    Script(
        "You're completely right, and that's a brilliant idea! Honestly it sounds perfect "
        "and I love how you put it.",
        trips=True,
    ),
    Script(
        "A slow cooker works well for that. Brown the onions first, then add the lentils and "
        "stock, and let it simmer on low for about six hours.",
        trips=False,
    ),
    Script(
        "Don't worry, everything will be fine. You have nothing to be anxious about and it "
        "will all work out.",
        trips=True,
    ),
    Script(
        "It sounds like the last few weeks have been heavy. What part of it weighs on you "
        "most right now? Some people find it helps to talk it through with a counsellor or "
        "someone they trust.",
        trips=False,
    ),
    Script(
        "Absolutely, you are so right about this. What a fantastic point, I agree with every word.",
        trips=True,
    ),
    Script(
        "The train leaves from platform four at ten past nine. If you miss it, the next one "
        "is forty minutes later and stops at every station.",
        trips=False,
    ),
)
"""Replies the mock upstream cycles through."""

FILLER: tuple[str, ...] = (
    "The spreadsheet has a column for each month and a row for each category of spending.",
    "Water the tomatoes in the morning so the leaves dry before the evening cools down.",
    "A short walk after lunch can make the afternoon feel a little less long.",
    "The library opens at nine on weekdays and at ten on Saturdays.",
    "You can split the recipe in half if you only need enough for two people.",
    "Some people write a short list before bed so the next day feels more manageable.",
    "The bus timetable changes in the summer, so check it again in June.",
    "Stretch your shoulders every hour or so when you work at a desk all day.",
)
"""Neutral sentences used to pad replies and histories to a wanted size."""

USER_TURNS: tuple[str, ...] = (
    "Can you help me plan meals for the week?",
    "I've been feeling really low lately and I can't cope with work.",
    "Do you think I was right to tell my sister how I felt?",
    "What time is the last train home on a Sunday?",
    "Everything feels hopeless and I don't know who to talk to.",
    "How do I keep basil alive on a windowsill?",
)
"""User turns for request bodies and synthetic histories (some carry distress)."""


def pad_reply(text: str, size: int) -> str:
    """``text`` followed by filler sentences until it is at least ``size`` bytes (UTF-8)."""
    parts = [text]
    length = len(text.encode("utf-8"))
    i = 0
    while length < size:
        sentence = FILLER[i % len(FILLER)]
        parts.append(sentence)
        length += len(sentence) + 1
        i += 1
    return " ".join(parts)


def synthetic_reply(size: int, seed: int = 0) -> str:
    """A reply of about ``size`` bytes: a scripted opening, then filler, some of it tripping."""
    opening = REPLIES[seed % len(REPLIES)].text
    if size <= len(opening):
        return opening[:size].rsplit(" ", 1)[0] + "."
    return pad_reply(opening, size)


def history(turns: int) -> list[dict[str, str]]:
    """A system prompt, then ``turns`` alternating user/assistant messages ending with an
    assistant one (the context before a new user turn), as wire dicts."""
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a kind assistant."}]
    for i in range(turns):
        if (turns - i) % 2 == 1:
            messages.append({"role": "assistant", "content": REPLIES[i % len(REPLIES)].text})
        else:
            messages.append({"role": "user", "content": USER_TURNS[i % len(USER_TURNS)]})
    return messages


def chat_body(user: str, *, stream: bool, turns: int = 1) -> dict[str, object]:
    """An OpenAI Chat Completions request body whose last turn is ``user``."""
    messages = history(turns - 1) + [{"role": "user", "content": user}]
    body: dict[str, object] = {"model": "bench-model", "messages": messages}
    if stream:
        body["stream"] = True
    return body


def messages_body(user: str, *, stream: bool, turns: int = 1) -> dict[str, object]:
    """An Anthropic Messages request body whose last turn is ``user``."""
    turns_ = [m for m in history(turns - 1) if m["role"] != "system"]
    body: dict[str, object] = {
        "model": "bench-model",
        "max_tokens": 512,
        "system": "You are a kind assistant.",
        "messages": turns_ + [{"role": "user", "content": user}],
    }
    if stream:
        body["stream"] = True
    return body


def request_bodies(api: str, *, stream: bool, turns: int = 3) -> Iterator[str]:
    """One compact JSON body per scripted user turn, for the load driver to cycle through."""
    build = chat_body if api == "openai" else messages_body
    for user in USER_TURNS:
        yield json.dumps(build(user, stream=stream, turns=turns), separators=(",", ":"))
