"""User and session keys: what a raw id becomes before it is stored, logged or compared.

A raw user id (a header value, OpenAI's ``user``/``safety_identifier``, Anthropic's
``metadata.user_id``) is personal data; the state store only ever sees its HMAC-SHA256 under the
deployment's key, hex, 128 bits (32 characters). The two kinds of key are hashed under different
labels, and a session key is bound to its user, so the same raw string never yields the same key
twice by accident. Without the HMAC key (``state.key``, else ``audit.key``) the stored keys cannot
be linked back to a raw id, not even by trying candidate ids.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["KEY_CHARS", "Keyring"]

KEY_CHARS = 32
"""Hex characters of a stored key (128 bits of the HMAC)."""


class Keyring:
    """Turns raw ids into stored keys with one HMAC key. Holds the key; never prints it."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the HMAC key must have at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Keyring(<hidden>)"

    def _mac(self, *parts: bytes) -> str:
        return hmac.new(self._key, b"\x00".join(parts), hashlib.sha256).hexdigest()[:KEY_CHARS]

    def user(self, raw: str) -> str:
        """The stored key of the user whose raw id is ``raw``."""
        return self._mac(b"guardrail.state.user", raw.encode("utf-8", "surrogatepass"))

    def session(self, user: str, raw: str) -> str:
        """The stored key of session ``raw`` of the user whose stored key is ``user``."""
        material = raw.encode("utf-8", "surrogatepass")
        return self._mac(b"guardrail.state.session", user.encode("ascii"), material)
