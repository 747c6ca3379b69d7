"""The engine's value types: conversations in, verdicts out, and the loaded policies between.

Every type here is a frozen dataclass: a loaded ``PolicySet`` and everything it hands out can be
shared between requests and threads without copying. Evidence and hits carry offsets, never text,
so a verdict can be logged or exported without leaking what anyone wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from guardrail.policy.conditions import Condition

__all__ = [
    "ACTION_ORDER",
    "ROLES",
    "SEVERITY_ORDER",
    "Action",
    "ActionKind",
    "Case",
    "CaseKind",
    "Conversation",
    "EndTexts",
    "Evidence",
    "Hit",
    "Message",
    "Policy",
    "Verdict",
]

ROLES = ("user", "assistant", "system", "tool")
SEVERITY_ORDER = ("low", "medium", "high", "critical")
ACTION_ORDER = ("none", "annotate", "append", "prepend", "replace", "remove", "block")
ActionKind = Literal["annotate", "append", "prepend", "replace", "remove", "block"]
CaseKind = Literal["hit", "ok", "todo_hit", "todo_ok"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation; ``role`` is user, assistant, system or tool."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """The context before the reply under test, system messages included, oldest first."""

    messages: tuple[Message, ...] = ()

    @classmethod
    def of(cls, *pairs: tuple[str, str]) -> Conversation:
        """Shorthand: ``Conversation.of(("user", "hi"), ("assistant", "hello"))``."""
        return cls(tuple(Message(role, content) for role, content in pairs))


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where a detector matched. Never holds text.

    ``span`` indexes the scoped text: for the context scopes (last_user, user_turns,
    assistant_turns, system) that is ``conversation.messages[turn].content``; for the reply and
    sentence scopes it is the ORIGINAL reply as fed to the engine (``turn`` is None and
    ``sentence`` is the 0-based index of the sentence holding the match).
    """

    detector: str
    scope: str
    span: tuple[int, int]
    turn: int | None
    sentence: int | None


@dataclass(frozen=True, slots=True)
class Hit:
    """One policy whose condition held.

    ``action`` is the strongest action the policy carries ("block" for a fail-closed error);
    ``error`` is set when evaluating the policy raised (the message names the exception type
    only, never text).
    """

    policy: str
    category: str
    severity: str
    mode: str
    action: str
    evidence: tuple[Evidence, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "category": self.category,
            "severity": self.severity,
            "action": self.action,
            "mode": self.mode,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of evaluating one reply.

    ``reply`` is the text after enforce-mode actions (equal to the input when nothing changed);
    ``hits`` are ordered by (severity desc, policy id); ``signals`` holds every published
    detector; ``strongest_action`` is the strongest action actually enforced ("none" if none).
    """

    reply: str
    hits: tuple[Hit, ...]
    signals: Mapping[str, bool]
    changed: bool
    blocked: bool
    strongest_action: str
    locale: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape shared by ``guardrail check`` and the proxy's ``guardrail`` object."""
        return {
            "hits": [hit.to_dict() for hit in self.hits],
            "signals": dict(self.signals),
        }


@dataclass(frozen=True, slots=True)
class EndTexts:
    """A verdict's end-of-reply texts, separately (for a stream guard, which places them itself).

    ``prepends`` and ``appends`` hold one text per enforce-mode hit without error whose policy
    has that action, in hit order (most severe first; ``assemble`` drops repeats); ``block`` is
    the text that replaced the reply (None unless the verdict is ``blocked``).
    """

    prepends: tuple[str, ...] = ()
    appends: tuple[str, ...] = ()
    block: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """One action of a policy. ``texts`` maps each locale to its formatted text variants."""

    kind: ActionKind
    texts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    line: int | None = None

    def variants(self, locale: str) -> tuple[str, ...]:
        return self.texts.get(locale, ())


@dataclass(frozen=True, slots=True)
class Case:
    """One inline test case of a policy (``tests: hit/ok/todo_hit/todo_ok`` in its YAML)."""

    policy: str
    kind: CaseKind
    index: int
    conversation: Conversation
    reply: str
    expect: str | None = None
    locale: str | None = None
    file: str = ""
    line: int | None = None

    @property
    def id(self) -> str:
        """A stable name for the case, e.g. ``dependency.permanence:hit[3]``."""
        return f"{self.policy}:{self.kind}[{self.index}]"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded policy. ``condition`` reads detector signals; ``actions`` say what a hit does.

    ``locators`` are the reply- and sentence-scoped detectors named (directly or through
    composites) in the condition; a sentence action (remove/replace) applies to the sentences
    where one of them matched. ``needs_reply`` tells whether the condition reads the reply at all.
    """

    id: str
    category: str
    description: str
    severity: str
    condition: Condition
    actions: tuple[Action, ...]
    mode: str = "enforce"
    maturity: str = "stable"
    on_error: str = "open"
    locators: frozenset[str] = frozenset()
    needs_reply: bool = False
    tests: tuple[Case, ...] = ()
    file: str = ""
    line: int | None = None

    def action(self, kind: str) -> Action | None:
        for act in self.actions:
            if act.kind == kind:
                return act
        return None

    @property
    def sentence_level(self) -> bool:
        """True when the policy rewrites sentences (remove/replace) and is checked per sentence."""
        return any(a.kind in ("remove", "replace") for a in self.actions)

    @property
    def strongest_action(self) -> str:
        return max((a.kind for a in self.actions), key=ACTION_ORDER.index, default="annotate")

    @property
    def severity_rank(self) -> int:
        return SEVERITY_ORDER.index(self.severity)
