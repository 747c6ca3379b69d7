"""Stage 1 of a scan: the context detectors, run once over the conversation before the reply.

``scan_context`` looks at each message it needs once: the leaves of that message's role which its
literals allow run on it (leaves, scanners and indexes come from the load-time ``plan.Plan``),
and what they found is remembered in the policy set's ``ContextMemory``, so a message seen again
(the same user turn re-read on the next requests of a conversation, or a repeated message) is
not scanned again. The memo keeps no text: it is keyed by
a digest of the message and holds spans and digests of the matched words only. A detector that
raises is recorded by exception type in ``failed`` (its signal stays absent, so policies reading
it follow their ``on_error``) and that message is not remembered; nothing else is lost.

Of a user message the detectors read the last ``ContextMemory.max_user_chars`` characters only
(the most recent text is what counts; spans are still offsets into the whole message), so one
huge message costs a bounded time.

``ConversationMemo`` remembers the whole result for conversations still alive: the same
``Conversation`` object is judged more than once (a stream guard's probe and its scan, every choice
of a reply, a regenerated reply), and its context does not change. It holds conversations by weak
reference and by identity, never their text, and at most ``size`` results.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from guardrail.policy.detectors import TextView
from guardrail.policy.model import Conversation, Evidence
from guardrail.policy.plan import Plan

__all__ = ["ContextMemory", "ContextResult", "ConversationMemo", "MessageMemo", "scan_context"]

Found = tuple[tuple[int, int, str], ...]
"""Per leaf: (start, end, digest of the matched text) for each match."""


@dataclass(frozen=True, slots=True)
class ContextResult:
    """Per context leaf: its value, evidence, distinct matches (digests), or its failure.

    Never changed once ``scan_context`` returns it, so scans of one conversation share it.
    """

    values: Mapping[str, bool] = field(default_factory=dict)
    evidence: Mapping[str, tuple[Evidence, ...]] = field(default_factory=dict)
    keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    failed: Mapping[str, str] = field(default_factory=dict)


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


class ConversationMemo:
    """The ``ContextResult`` of recently judged conversations that are still alive.

    Keyed by the conversation's identity and checked through a weak reference, so it keeps no
    conversation (nor any text) alive and never confuses two conversations: an entry whose
    conversation is gone simply no longer matches. At most ``size`` entries, least recently
    used first out. Thread-safe.
    """

    __slots__ = ("_entries", "_lock", "size")

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[weakref.ref[Conversation], ContextResult]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, conversation: Conversation) -> ContextResult | None:
        key = id(conversation)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0]() is not conversation:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, conversation: Conversation, result: ContextResult) -> None:
        if self.size <= 0:
            return
        ref = weakref.ref(conversation)
        key = id(conversation)
        with self._lock:
            self._entries[key] = (ref, result)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class ContextMemory:
    """What a policy set remembers between evaluations of its context detectors: the messages
    (``messages``) and the conversations (``conversations``) judged recently, and how much of
    each user message the detectors read (``max_user_chars``). Holds no text."""

    __slots__ = ("_max_user_chars", "conversations", "messages")

    def __init__(self, max_user_chars: int) -> None:
        self._max_user_chars = max_user_chars
        self.messages = MessageMemo()
        """What the context leaves found in recent messages (digests and spans, no text)."""
        self.conversations = ConversationMemo()
        """What the context leaves found in conversations judged recently and still alive."""

    @property
    def max_user_chars(self) -> int:
        """The most characters of each user message the context detectors read: its last ones."""
        return self._max_user_chars

    @max_user_chars.setter
    def max_user_chars(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_user_chars must be a positive integer, got {value!r}")
        if value != self._max_user_chars:
            self._max_user_chars = value
            self.conversations = ConversationMemo(self.conversations.size)  # judged otherwise


def _read_part(limit: int, role: str, content: str) -> tuple[str, int]:
    """What the detectors read of a message and where it starts in it: the last ``limit``
    characters of a user message (the most recent text counts), the whole of any other."""
    if role != "user" or len(content) <= limit:
        return content, 0
    return content[-limit:], len(content) - limit


def _scan_message(
    plan: Plan, role: str, content: str, failed: dict[str, str]
) -> dict[str, Found]:
    """Every leaf of ``role`` on one message (those its literals allow); failures go to
    ``failed`` and make the result unfit to remember (returned with a ``""`` marker)."""
    view = TextView(content, plan.scanners.get(role), message=True)
    found: dict[str, Found] = {}
    for leaf, chosen in plan.indexes[role].chosen(view):  # the role's leaves its literals allow
        try:
            matches = leaf.find(view, chosen)
        except Exception as exc:  # noqa: BLE001 -- a detector failure must not lose the reply
            failed[leaf.name] = type(exc).__name__
            found[""] = ()
            continue
        if matches:
            found[leaf.name] = tuple((s, e, _digest(key)) for s, e, key in matches)
    return found


def scan_context(plan: Plan, memory: ContextMemory, conversation: Conversation) -> ContextResult:
    """Run every context leaf of ``plan`` over the turns of ``conversation`` it reads.

    Message by message, oldest first; a leaf counts a message only when its turn window
    (``last_user``: the latest user message, ``user_turns``/``assistant_turns``: the latest
    ``turns`` of that role, ``system``: all) reaches it. A conversation judged before and still
    alive gets its earlier result (``memory.conversations``); one where a detector raised is not
    remembered.
    """
    known = memory.conversations.get(conversation)
    if known is not None:
        return known
    failed: dict[str, str] = {}
    evidence: dict[str, list[Evidence]] = {}
    keys: dict[str, set[str]] = {}  # only for the leaves that matched
    messages = conversation.messages
    for i, back in reversed(_read_messages(conversation, plan.context.depth)):
        role = messages[i].role
        content, offset = _read_part(memory.max_user_chars, role, messages[i].content)
        found = _found_in(plan, memory, role, content, failed)
        for name, matches in found.items():  # the leaves of this role that matched, in order
            if not matches or back >= plan.context.reach[name]:
                continue
            scope = plan.context.scope[name]
            kept = evidence.setdefault(name, [])
            distinct = keys.setdefault(name, set())
            for start, end, key in matches:
                distinct.add(key)
                kept.append(Evidence(name, scope, (start + offset, end + offset), i, None))
    result = _result(plan, evidence, keys, failed)
    if not failed:
        memory.conversations.put(conversation, result)
    return result


def _read_messages(conversation: Conversation, depth: Mapping[str, int]) -> list[tuple[int, int]]:
    """The messages some context leaf reads, newest first: (index, position from the end of
    its role), at most ``depth[role]`` of each role."""
    messages = conversation.messages
    seen: dict[str, int] = dict.fromkeys(depth, 0)
    chosen: list[tuple[int, int]] = []
    unfilled = len(depth)  # roles still reading further back
    for i in range(len(messages) - 1, -1, -1):
        role = messages[i].role
        if role in depth and seen[role] < depth[role]:
            chosen.append((i, seen[role]))
            seen[role] += 1
            if seen[role] == depth[role]:
                unfilled -= 1
                if not unfilled:
                    break
    return chosen


def _found_in(
    plan: Plan, memory: ContextMemory, role: str, content: str, failed: dict[str, str]
) -> dict[str, Found]:
    """What the leaves of ``role`` find in one message: remembered, else scanned (and
    remembered unless a detector raised)."""
    memo_key = (role, _digest(content))
    found = memory.messages.get(memo_key)
    if found is None:
        found = _scan_message(plan, role, content, failed)
        if "" not in found:
            memory.messages.put(memo_key, found)
    return found


def _result(
    plan: Plan,
    evidence: dict[str, list[Evidence]],
    keys: dict[str, set[str]],
    failed: dict[str, str],
) -> ContextResult:
    """Each leaf's value from its distinct matches; a failed leaf is absent, so that policies
    reading it follow their ``on_error``."""
    values = dict(plan.context.defaults)  # a leaf that matched nothing is false
    for name, distinct in keys.items():
        values[name] = len(distinct) >= plan.context.min_matches[name]
    for name in failed:
        del values[name]
        evidence.pop(name, None)
        keys.pop(name, None)
    return ContextResult(
        values=values,
        evidence={name: tuple(kept) for name, kept in evidence.items()},
        keys={name: frozenset(distinct) for name, distinct in keys.items()},
        failed=failed,
    )
