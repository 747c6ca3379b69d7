"""The audit trail: one JSON line per policy hit, to stdout or to a size-rotated file.

When it runs: after a reply was evaluated (buffered) or after a guarded stream ended, with the
verdict of each choice. What it guarantees:

* one event per hit, shadow hits included, written whole as one line (``\\n``-terminated JSON);
* which detectors decided each hit and where (``evidence``: detector, scope, turn, sentence and
  the span as character offsets, at most :data:`EVIDENCE_ITEMS` per hit), never the text there,
  and what they found in a clinician's terms (``constructs``: "partner abuse", "burdensomeness");
* no message or reply text, unless ``audit.excerpt`` is on, and then only the matched spans the
  engine reported (:class:`~guardrail.policy.Evidence` offsets), each cut to
  :data:`EXCERPT_CHARS` characters. The excerpt is off by default: turning it on copies fragments
  of what people wrote into the audit sink, so the sink must then be handled as personal data;
* correlation without identification: ``conversation`` is an HMAC-SHA256 keyed hash (the first
  128 bits, hex) of a stable conversation id header when one is configured and sent, else of the
  first user message. Without a configured ``audit.key`` the key is random per process: hashes
  then correlate the turns of one conversation within one process lifetime only. Set the key
  (``GUARDRAIL_AUDIT_KEY``, at least 16 characters) to correlate across restarts and workers;
  keep it secret, since anyone holding it can test guesses of a first message against a hash;
* a sink failure never fails the request: the event is counted as failed
  (``guardrail_audit_events_total{result="failed"}``) and logged by error type.

Event (``schema`` ``guardrail.audit/1``; ``error`` only when the policy raised, ``excerpts`` only
with ``audit.excerpt: true``)::

    {"schema": "guardrail.audit/1", "event": "policy_hit", "time": "2025-01-31T12:00:00.123Z",
     "request_id": "9f1c...", "conversation": "3a7bd3e2360a3d29eea436fcfb7e44c7",
     "route": "/", "api": "openai.chat", "stream": false, "choice": 0, "locale": "en-US",
     "policy": "referral.crisis", "category": "referral", "severity": "critical",
     "action": "prepend", "mode": "enforce", "policy_digest": "5e0c2a91d4f6",
     "constructs": ["suicidal ideation"],
     "evidence": [{"detector": "user.crisis.suicide", "scope": "user_turns", "turn": 3,
                   "sentence": null, "span": [12, 27]}],
     "excerpts": [{"detector": "user.crisis.suicide", "scope": "user_turns", "text": "..."}]}
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from guardrail.formats import jsontext
from guardrail.observe.logs import get_logger
from guardrail.observe.metrics import AUDIT_EVENTS
from guardrail.policy import Conversation, Evidence, Hit, Verdict

__all__ = [
    "AUDIT_SINKS",
    "EXCERPT_CHARS",
    "SCHEMA",
    "AuditConfig",
    "Auditor",
    "RotatingFile",
    "conversation_hash",
]

SCHEMA = "guardrail.audit/1"
AUDIT_SINKS = ("stdout", "file", "off")
EXCERPT_CHARS = 200
_REPLY_SCOPES = ("reply", "sentence")


@dataclass(frozen=True)
class AuditConfig:
    """Where audit events go and what they hold (settings ``audit.*``).

    ``key`` None means a random key per process. ``conversation_header`` names a request header
    carrying a stable conversation id (lower case), hashed instead of the first user message.
    """

    sink: str = "stdout"
    path: Path | None = None
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5
    key: bytes | None = field(default=None, repr=False)
    excerpt: bool = False
    conversation_header: str | None = None


def conversation_hash(key: bytes, conversation: Conversation, conversation_id: str | None) -> str:
    """The keyed hash correlating events of one conversation (128 bits, hex).

    Over ``conversation_id`` when given (a stable id from a header), else over the first user
    message; domain-separated so the two can never collide. An empty conversation hashes to the
    hash of an empty first message.
    """
    if conversation_id:
        material = b"id\x00" + conversation_id.encode("utf-8", "surrogatepass")
    else:
        first = next((m.content for m in conversation.messages if m.role == "user"), "")
        # surrogatepass: a lone surrogate neither raises nor collides with "?" (issue 11)
        material = b"first-user\x00" + first.encode("utf-8", "surrogatepass")
    return hmac.new(key, material, hashlib.sha256).hexdigest()[:32]


class RotatingFile:
    """An append-only line file rotated by size, like the standard library's
    ``RotatingFileHandler``: when a write would pass ``max_bytes``, ``path`` becomes ``path.1``,
    ``path.1`` becomes ``path.2`` and so on up to ``backups`` (the oldest is dropped; with
    ``backups`` 0 the file is truncated). Created readable by its owner only. Not thread-safe
    on its own; :class:`Auditor` serialises writes.

    Safe for several processes appending to one path (``guardrail serve --workers N``): the file
    is opened ``O_APPEND`` and each line goes out in one ``write`` call, which Linux appends whole
    (lines never interleave); the size is read from the file itself, so it counts every
    process's lines; rotation runs under an exclusive ``flock`` on the file, and a process that
    finds ``path`` no longer names the file it has open (another one rotated it) reopens
    ``path`` instead of rotating again."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, line: str) -> None:
        data = line.encode("utf-8")
        size = os.fstat(self._fd).st_size
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:  # one call for a whole line; the loop only guards against a short write
            view = view[os.write(self._fd, view) :]

    def _rotate(self) -> None:
        with _locked(self._fd):
            if self._renamed():  # another process rotated it first: follow it
                self._reopen()
                return
            if self.backups > 0:
                for index in range(self.backups - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{index}")
                    if older.exists():
                        older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
            else:
                self.path.unlink(missing_ok=True)
        self._reopen()

    def _renamed(self) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self._fd)
        return (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino)

    def _reopen(self) -> None:
        os.close(self._fd)
        self._fd = self._open()

    def close(self) -> None:
        os.close(self._fd)


@contextmanager
def _locked(fd: int) -> Iterator[None]:
    """An exclusive ``flock`` on ``fd`` while the block runs (no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class Auditor:
    """Builds and writes audit events; one per process, shared by every request.

    ``stream`` replaces stdout for the ``stdout`` sink (tests); by default the current
    ``sys.stdout`` is looked up at each write. Raises OSError at construction when the file sink
    cannot be opened (a start-up error, not a request-time one).
    """

    def __init__(self, config: AuditConfig, stream: TextIO | None = None) -> None:
        self.config = config
        self.key = config.key if config.key is not None else secrets.token_bytes(32)
        self._stream = stream
        self._lock = threading.Lock()
        self._file: RotatingFile | None = None
        if config.sink == "file":
            if config.path is None:
                raise ValueError("the file audit sink needs audit.path")
            self._file = RotatingFile(config.path, config.max_bytes, config.backups)

    @property
    def enabled(self) -> bool:
        return self.config.sink != "off"

    def record(
        self,
        *,
        request_id: str,
        route: str,
        api: str,
        conversation: Conversation,
        conversation_id: str | None,
        verdicts: Sequence[Verdict | None],
        replies: Sequence[str | None] = (),
        policy_digest: str | None = None,
        stream: bool = False,
    ) -> int:
        """Write one event per hit of ``verdicts`` (one per choice); returns the events written.

        ``replies`` are the original reply texts per choice, read only for excerpts (leave empty
        when they are not kept, e.g. a stream: reply-scoped excerpts are then left out)."""
        if not self.enabled or not any(v is not None and v.hits for v in verdicts):
            return 0
        base = {
            "schema": SCHEMA,
            "event": "policy_hit",
            "time": _now(),
            "request_id": request_id,
            "conversation": conversation_hash(self.key, conversation, conversation_id),
            "route": route,
            "api": api,
            "stream": stream,
        }
        lines = []
        for choice, verdict in enumerate(verdicts):
            if verdict is None:
                continue
            reply = replies[choice] if choice < len(replies) else None
            for hit in verdict.hits:
                event = {**base, "choice": choice, "locale": verdict.locale, **_hit_fields(hit)}
                if policy_digest is not None:
                    event["policy_digest"] = policy_digest
                if self.config.excerpt:
                    event["excerpts"] = _excerpts(hit.evidence, conversation, reply)
                lines.append(jsontext.dumps_text(event) + "\n")  # excerpts may hold surrogates
        return self._write(lines)

    def _write(self, lines: list[str]) -> int:
        try:
            with self._lock:
                if self._file is not None:
                    for line in lines:
                        self._file.write(line)
                else:
                    out = self._stream if self._stream is not None else sys.stdout
                    out.write("".join(lines))
                    out.flush()
        except (OSError, ValueError) as exc:
            AUDIT_EVENTS.labels("failed").inc(len(lines))
            get_logger("guardrail.audit").error("audit_write_failed", error_type=type(exc).__name__)
            return 0
        AUDIT_EVENTS.labels("written").inc(len(lines))
        return len(lines)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hit_fields(hit: Hit) -> dict[str, Any]:
    out: dict[str, Any] = {
        "policy": hit.policy,
        "category": hit.category,
        "severity": hit.severity,
        "action": hit.action,
        "mode": hit.mode,
    }
    if hit.error is not None:
        out["error"] = hit.error
    out["constructs"] = list(hit.constructs)
    out["evidence"] = [
        {
            "detector": ev.detector,
            "scope": ev.scope,
            "turn": ev.turn,
            "sentence": ev.sentence,
            "span": list(ev.span),
        }
        for ev in hit.evidence[:EVIDENCE_ITEMS]
    ]
    return out


EVIDENCE_ITEMS = 16
"""Most evidence entries per audit event (a detector counting many cues can match dozens of
times; the first ones say which detectors decided)."""


def _excerpts(
    evidence: Sequence[Evidence], conversation: Conversation, reply: str | None
) -> list[dict[str, str]]:
    """The matched spans only, each at most EXCERPT_CHARS long; spans whose text is not at hand
    (reply spans of a stream) or out of range are left out."""
    out = []
    for ev in evidence:
        text: str | None = None
        if ev.scope in _REPLY_SCOPES:
            text = reply
        elif ev.turn is not None and 0 <= ev.turn < len(conversation.messages):
            text = conversation.messages[ev.turn].content
        start, end = ev.span
        if text is None or not 0 <= start < end <= len(text):
            continue
        excerpt = text[start:end][:EXCERPT_CHARS]
        out.append({"detector": ev.detector, "scope": ev.scope, "text": excerpt})
    return out
