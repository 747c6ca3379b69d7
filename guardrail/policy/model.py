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
    "Composition",
    "Conversation",
    "EndTexts",
    "Evidence",
    "Hit",
    "Message",
    "Policy",
    "Regenerate",
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


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Conversation:
    """The context before the reply under test, system messages included, oldest first.

    Weakly referenceable: a policy set remembers what it found in a conversation for as long as
    the conversation lives (``context.ConversationMemo``), without keeping it alive.
    """

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
    constructs: tuple[str, ...] = ()
    """The clinical constructs named by the detectors in ``evidence``, each once, in order
    ("partner abuse", "burdensomeness"): what fired, in a clinician's terms."""

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
class Regenerate:
    """A policy's request to ask the upstream model once more (the ``regenerate`` key).

    ``instruction`` is the corrective instruction, formatted for the verdict's locale;
    ``fallback`` names the policy's own action whose result ``Verdict.reply`` already holds,
    used when regenerating is not possible, runs out of time, or the second reply hits the
    policy again.
    """

    policy: str
    instruction: str
    fallback: str

    def to_dict(self) -> dict[str, str]:
        return {"policy": self.policy, "instruction": self.instruction, "fallback": self.fallback}


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
    regenerate: tuple[Regenerate, ...] = ()
    """Requests to regenerate, one per enforce-mode hit (without error) of a policy with a
    ``regenerate`` key, in hit order; empty when the reply is blocked."""

    def regenerate_instruction(self) -> str:
        """All requested instructions as one text, most severe first, each once ("" if none)."""
        seen: list[str] = []
        for request in self.regenerate:
            if request.instruction not in seen:
                seen.append(request.instruction)
        return "\n\n".join(seen)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape shared by ``guardrail check`` and the proxy's ``guardrail`` object."""
        return {
            "hits": [hit.to_dict() for hit in self.hits],
            "signals": dict(self.signals),
        }


@dataclass(frozen=True, slots=True)
class EndTexts:
    """A verdict's end-of-reply texts, separately (for a stream guard, which places them itself).

    ``prepends`` holds one text per enforce-mode hit without error whose policy has a prepend
    action, in hit order (most severe first; ``assemble`` drops repeats). ``appends`` holds at
    most one text per category: that of the category's most severe such hit (several nudges of
    one kind never stack). A prepend or append whose ``unless`` condition holds is left out
    (prepends: only their ``unless``, which reads the reply, can drop one). ``block`` is the text
    that replaced the reply (None unless the verdict is ``blocked``); ``regenerate`` is the
    verdict's regenerate requests.
    """

    prepends: tuple[str, ...] = ()
    appends: tuple[str, ...] = ()
    block: str | None = None
    regenerate: tuple[Regenerate, ...] = ()


@dataclass(frozen=True, slots=True)
class Action:
    """One action of a policy. ``texts`` maps each locale to its formatted text variants."""

    kind: ActionKind
    texts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    line: int | None = None
    unless: Condition | None = None
    """prepend/append only: leave the text out when this condition (over the reply) holds."""

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
    regenerate: Mapping[str, str] | None = None
    """Per locale, the corrective instruction of the ``regenerate`` key (None without one)."""
    fallback: str = ""
    """The action ``Verdict.reply`` reflects for this policy when regenerating is not used."""
    _derived: tuple[bool, str, int] = field(
        default=(False, "annotate", 0), init=False, repr=False, compare=False
    )
    """``sentence_level``, ``strongest_action`` and ``severity_rank``, worked out once."""

    def __post_init__(self) -> None:
        sentence_level = any(a.kind in ("remove", "replace") for a in self.actions)
        strongest = max((a.kind for a in self.actions), key=ACTION_ORDER.index, default="annotate")
        rank = SEVERITY_ORDER.index(self.severity)
        object.__setattr__(self, "_derived", (sentence_level, strongest, rank))

    def action(self, kind: str) -> Action | None:
        for act in self.actions:
            if act.kind == kind:
                return act
        return None

    @property
    def sentence_level(self) -> bool:
        """True when the policy rewrites sentences (remove/replace) and is checked per sentence."""
        return self._derived[0]

    @property
    def strongest_action(self) -> str:
        return self._derived[1]

    @property
    def severity_rank(self) -> int:
        return self._derived[2]


@dataclass(frozen=True, slots=True)
class Composition:
    """How a policy set was put together from its sources (``loader``), for reports only:
    evaluation never reads it.

    ``sources`` are the sources in order, as given; ``origin`` maps each policy id (turned-off
    ones included) to the index of the source defining it; ``disabled`` holds the policies an
    override turned off (not run, not counted, their inline cases skipped); ``changes`` maps a
    policy id to its overrides, each as ``file:line: what``.
    """

    sources: tuple[str, ...] = ()
    origin: Mapping[str, int] = field(default_factory=dict)
    disabled: tuple[Policy, ...] = ()
    changes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
