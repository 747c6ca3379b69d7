"""Undo a body's ``Content-Encoding`` before a wire format reads it: pure, bounded.

Used on request bodies (a client may gzip its request; the proxy forwards it as sent but reads the
decoded copy) and on buffered reply bodies. No I/O: bytes in, bytes out, or one of the two errors.
"""

from __future__ import annotations

import zlib

from guardrail.errors import TooLarge, Undecodable  # re-exported: their old home

__all__ = ["STREAM_CODINGS", "TooLarge", "Undecodable", "decode_body", "stream_decodable"]


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, gzip, deflate; stacked allowed), bounded by ``limit``.

    Raises Undecodable for an unknown coding or corrupt data, TooLarge for a decoded size over
    ``limit`` (so a small compressed body cannot expand without bound).
    """
    data = raw
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise Undecodable(f"unsupported content-encoding {coding!r}")
        data = _inflate(data, coding, limit)
    return data


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    gzip = coding in ("gzip", "x-gzip")
    # "deflate" is meant to be zlib-wrapped, but some servers send a raw deflate stream.
    for wbits in [16 + zlib.MAX_WBITS] if gzip else [zlib.MAX_WBITS, -zlib.MAX_WBITS]:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit or inflater.unconsumed_tail:
            raise TooLarge("decoded body larger than max_inspect_bytes")
        if inflater.eof:
            return out
    raise Undecodable(f"corrupt or truncated {coding} body")


STREAM_CODINGS = frozenset({"identity", "gzip", "deflate"})
"""The content codings a streamed reply is decoded from as it arrives (httpx's own decoders;
``br`` and ``zstd`` only with optional packages guardrail does not require)."""


def stream_decodable(content_encoding: str) -> bool:
    """Whether every coding in a streamed reply's ``Content-Encoding`` is in
    :data:`STREAM_CODINGS`. A stream in another coding passes through untouched, marked
    ``encoding``: read as plain event bytes it would lose its text."""
    codings = (c.strip().lower() for c in content_encoding.split(","))
    return all(c in STREAM_CODINGS for c in codings if c)
