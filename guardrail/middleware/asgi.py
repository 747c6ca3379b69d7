"""Small pure-ASGI helpers of the middleware: header lookup and rewriting, request replay.

No state beyond one request's :class:`Replay`; no I/O of their own, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Receive, Send

__all__ = ["NO_HEADERS", "Replay", "header", "marked", "send_plain"]

Headers = list[tuple[bytes, bytes]]
NO_HEADERS: frozenset[bytes] = frozenset()


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str:
    """The first value of header ``name`` (lower case), or "" if absent."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def marked(
    headers: Iterable[tuple[bytes, bytes]], extra: Headers, drop: frozenset[bytes]
) -> Headers:
    """The app's headers less ``drop`` and any ``x-guardrail-*`` it set, then ours."""
    kept = [
        (bytes(k), bytes(v))
        for k, v in headers
        if k.lower() not in drop and not k.lower().startswith(b"x-guardrail-")
    ]
    return [*kept, *extra]


class Replay:
    """The request as the app reads it: the messages read ahead, then the server's."""

    def __init__(self, messages: list[Message], receive: Receive) -> None:
        self.messages = messages
        self.receive = receive
        self.disconnected = any(msg["type"] == "http.disconnect" for msg in messages)

    async def __call__(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message


async def send_plain(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    """A whole response of one body."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
