"""Stage 1 of a scan: the context detectors, run once over the conversation before the reply.

``scan_context`` looks at each message it needs once: the leaves of that message's role which its
literals allow run on it, and what they found is remembered in the policy set's
``MessageMemo``, so a message seen again (the same user turn re-read on the next requests of a
conversation, or a repeated message) is not scanned again. The memo keeps no text: it is keyed by
a digest of the message and holds spans and digests of the matched words only. A detector that
raises is recorded by exception type in ``failed`` (its signal stays absent, so policies reading
it follow their ``on_error``) and that message is not remembered; nothing else is lost.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from guardrail.policy.detectors import TextView
from guardrail.policy.model import Conversation, Evidence

if TYPE_CHECKING:
    from guardrail.policy.engine import PolicySet

__all__ = ["ContextResult", "MessageMemo", "scan_context"]

Found = tuple[tuple[int, int, str], ...]
"""Per leaf: (start, end, digest of the matched text) for each match."""


@dataclass
class ContextResult:
    """Per context leaf: its value, evidence, distinct matches (digests), or its failure."""

    values: dict[str, bool] = field(default_factory=dict)
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)
    keys: dict[str, set[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class MessageMemo:
    """A bounded, thread-safe memory of what the context leaves found in recent messages.

    Keyed by (role, digest of the content); values hold, per leaf that matched, its spans and
    digests of the matched words. Least recently used entries go first.
    """

    __slots__ = ("_entries", "_lock", "size")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], dict[str, Found]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> dict[str, Found] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], found: dict[str, Found]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = found
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _scan_message(ps: PolicySet, role: str, content: str, out: ContextResult) -> dict[str, Found]:
    """Every leaf of ``role`` on one message (those its literals allow); failures go to
    ``out.failed`` and make the result unfit to remember (returned with a ``""`` marker)."""
    view = TextView(content, ps.scanners.get(role), message=True)
    active = ps.indexes[role].active(view)
    found: dict[str, Found] = {}
    for leaf in ps.context_by_role[role]:
        if active is not None and leaf.name not in active:
            continue
        try:
            matches = leaf.find(view)
        except Exception as exc:  # noqa: BLE001 -- a detector failure must not lose the reply
            out.failed[leaf.name] = type(exc).__name__
            found[""] = ()
            continue
        if matches:
            found[leaf.name] = tuple((s, e, _digest(key)) for s, e, key in matches)
    return found


def scan_context(ps: PolicySet, conversation: Conversation) -> ContextResult:
    """Run every context leaf of ``ps`` over the turns of ``conversation`` it reads.

    Message by message, oldest first; a leaf counts a message only when its turn window
    (``last_user``: the latest user message, ``user_turns``/``assistant_turns``: the latest
    ``turns`` of that role, ``system``: all) reaches it.
    """
    messages = conversation.messages
    depth = ps.context_depth
    seen: dict[str, int] = dict.fromkeys(depth, 0)
    chosen: list[tuple[int, int]] = []  # (message index, position from the end of its role)
    for i in range(len(messages) - 1, -1, -1):
        role = messages[i].role
        if role in depth and seen[role] < depth[role]:
            chosen.append((i, seen[role]))
            seen[role] += 1
    out = ContextResult()
    keys: dict[str, set[str]] = {leaf.name: set() for leaf in ps.context_leaves}
    for i, back in reversed(chosen):
        role = messages[i].role
        memo_key = (role, _digest(messages[i].content))
        found = ps.memo.get(memo_key)
        if found is None:
            found = _scan_message(ps, role, messages[i].content, out)
            if "" not in found:
                ps.memo.put(memo_key, found)
        for leaf in ps.context_by_role[role]:
            matches = found.get(leaf.name)
            if not matches or back >= leaf.reach:
                continue
            evidence = out.evidence.setdefault(leaf.name, [])
            for start, end, key in matches:
                keys[leaf.name].add(key)
                evidence.append(Evidence(leaf.name, leaf.scope, (start, end), i, None))
    for leaf in ps.context_leaves:
        if leaf.name in out.failed:
            out.evidence.pop(leaf.name, None)
            continue
        out.values[leaf.name] = len(keys[leaf.name]) >= leaf.min_matches
        out.keys[leaf.name] = keys[leaf.name]
    return out
