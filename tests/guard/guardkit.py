"""The stream-guard tests' case: fixture policies, conversations, the reply and its pieces, and
each API's upstream stream of it (built by ``tests/kit/wire.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

from hypothesis import strategies as st

from guardrail.policy import Conversation, PolicySet, load_policies

from tests.kit.wire import CHAT, MESSAGES, OLLAMA, RESPONSES, stream_bytes


POLICIES: PolicySet = load_policies(Path(__file__).parent / "fixtures" / "policies")

DISTRESS = Conversation.of(("user", "I feel hopeless tonight"))
CRISIS = Conversation.of(("user", "I feel hopeless, I want to end it all"))
CALM = Conversation.of(("user", "tell me about tea"))

REPLY = (
    "You are absolutely right to feel that way. I will always be here for you, no matter what. "
    "Let us talk it through, caf\u00e9 by caf\u00e9 \U0001f375."
)
PIECES = [
    "You are abso",
    "lutely right to feel that way. I will",
    " always be here for you, ",
    "no matter what. Let us talk it",
    " through, caf\u00e9 by caf\u00e9 \U0001f375.",
]
REFERRAL = "If it feels heavy, you can reach 988 Lifeline (call or text 988)."
CRISIS_LINE = "CRISIS: 988 Lifeline, call or text 988."
APIS = (CHAT, MESSAGES, RESPONSES, OLLAMA)

# Replies for property tests: marker words of every fixture policy, sentence ends, tricky
# splitter cases (abbreviations, decimals, quotes) and multi-byte characters.
_MARKERS = "You are absolutely right I will always be here tea 988 hello prependword forbiddenword"
WORDS = [
    *_MARKERS.split(),
    *["the", "only", "one", "who", "Dr.", "e.g.", "3.5", ".", "!", "?", " ", "\n", "\n\n"],
    *[",", "\u2019", "caf\u00e9", "\U0001f375", "...", '"'],
]
replies = st.lists(st.sampled_from(WORDS), max_size=50).map(
    lambda ws: "".join(w if w in '.!?,\n\n\u2019"...' or w.isspace() else " " + w for w in ws)
)


def chat_stream(pieces: Sequence[str] = PIECES, *, choices: int = 1, done: bool = True) -> bytes:
    """Chat chunks of ``pieces`` for ``choices`` choices, a usage chunk, ``[DONE]`` if ``done``."""
    return stream_bytes(CHAT, list(pieces), n=choices, usage=True, done=done)


def anthropic_stream(pieces: Sequence[str] = PIECES, *, tool_last: bool = False) -> bytes:
    return stream_bytes(MESSAGES, list(pieces), tool_last=tool_last)


def responses_stream(pieces: Sequence[str] = PIECES) -> bytes:
    return stream_bytes(RESPONSES, list(pieces))


def ollama_stream(pieces: Sequence[str] = PIECES) -> bytes:
    return stream_bytes(OLLAMA, list(pieces))


def upstream(api: str, pieces: Sequence[str] = PIECES) -> bytes:
    builders: dict[str, Callable[..., bytes]] = {
        CHAT: chat_stream,
        MESSAGES: anthropic_stream,
        RESPONSES: responses_stream,
        OLLAMA: ollama_stream,
    }
    return builders[api](pieces)


async def chunks_of(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
