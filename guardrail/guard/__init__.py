"""Guarding replies: text pieces, streams, whole bodies, the annotation and the request flow.

Sans I/O: bytes and events in, decisions and bytes out. The proxy and the middleware drive it.
``TextGuard`` (the library's streamed-text API) is importable from here, as before.
"""

from guardrail.guard.text import (
    DEFAULT_MAX_HOLDBACK_CHARS,
    GuardResult,
    Holdback,
    TextGuard,
    check_holdback,
)

__all__ = ["DEFAULT_MAX_HOLDBACK_CHARS", "GuardResult", "Holdback", "TextGuard", "check_holdback"]
