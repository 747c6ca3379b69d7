"""Wire formats: one pure module per API format, plus what they share.

Every format module (``openai_chat`` today; Responses, Anthropic Messages and Ollama later) has the
same shape and imports no I/O, logging or metrics:

    NAME = "openai.chat"
    parse_request(body: object) -> ChatRequest
    reply_texts(body: object) -> list[str | None]     # one entry per choice; None = nothing to inspect
    apply(body: object, texts: list[str | None], annotation: dict) -> dict

Anything a format module cannot make sense of raises :class:`FormatError`; the pipeline turns that
into a pass-through annotated as not inspected, never into a failed request.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardrail.policy import Conversation

__all__ = ["ChatRequest", "FormatError"]


class FormatError(ValueError):
    """A request or response body that a wire-format module cannot parse.

    The message describes the shape problem (``"choices[0].message is not an object"``) and never
    quotes message or reply text, so it is safe to log.
    """


@dataclass(frozen=True)
class ChatRequest:
    """What the pipeline needs to know about a chat request, independent of its wire format.

    ``conversation`` is the context the reply answers (system messages included, in order);
    ``stream`` says whether the client asked for a streamed reply; ``model`` is the requested model
    name when the request names one.
    """

    conversation: Conversation
    stream: bool
    model: str | None
