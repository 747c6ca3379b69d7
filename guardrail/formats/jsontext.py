"""JSON text on the wire that any body can survive: lone surrogates out, invalid UTF-8 in.

A JSON string may hold a lone surrogate (``"\\ud800"``, half an emoji cut by a client or a model);
``json.loads`` gives it back as a lone surrogate code point, which UTF-8 cannot encode. And a body
may carry bytes that are not UTF-8 at all. Neither may turn a reply into an error or hide the
conversation from the policies (issue 11):

* :func:`dumps`: compact JSON, non-ASCII written as UTF-8 as usual, a lone surrogate written as
  its ``\\uXXXX`` escape, so the output is always valid UTF-8 and decodes to the same value the
  upstream or the client sent (every other character keeps its bytes);
* :func:`loads`: ``json.loads``, reading bytes that are not valid UTF-8 as UTF-8 with each bad
  sequence as U+FFFD (what a person's screen shows for them), so the text around them is read.

Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["dumps", "dumps_text", "escape_surrogates", "loads"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_surrogates(text: str) -> str:
    """JSON text (written with ``ensure_ascii=False``) with each lone surrogate as its escape.

    Outside strings JSON is ASCII, so every surrogate sits inside a string literal, where its
    ``\\uXXXX`` escape means the same code point; every other character is left as it is.
    """
    return text if text.isascii() else _SURROGATE.sub(_escape, text)


def dumps_text(value: object) -> str:
    """Compact JSON text of ``value`` that encodes to UTF-8 whatever strings it holds."""
    return escape_surrogates(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def dumps(value: object) -> bytes:
    """``dumps_text(value)`` as UTF-8 bytes."""
    return dumps_text(value).encode("utf-8")


def loads(data: bytes | str, **options: Any) -> Any:
    """``json.loads(data)``; bytes that are not UTF-8 are read with U+FFFD for each bad sequence.

    Raises ValueError (``json.JSONDecodeError``) on what is not JSON, RecursionError on absurd
    nesting, as ``json.loads`` does.
    """
    try:
        return json.loads(data, **options)
    except UnicodeDecodeError:
        assert isinstance(data, bytes)  # a str never fails to decode
        return json.loads(data.decode("utf-8", "replace"), **options)
