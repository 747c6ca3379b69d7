"""``Scan``: the evaluation of one reply, sentence by sentence. Created by ``PolicySet.start``.

Stages, each with its guarantee:

1. construction: the context detectors (last_user, user_turns, assistant_turns, system) run once,
   each message normalised once.
2. ``feed_sentence(sentence)`` -> released text: reply and sentence detectors run on the
   sentence; reply detectors accumulate (true once enough distinct matches were seen so far).
   Policies with a sentence action (remove/replace) are checked here, with the signals known so
   far, and act on this sentence if one of their reply/sentence detectors matched in it: remove
   beats replace, the most severe replace wins, and a policy places its replacement text once
   (later sentences it matches are dropped).
3. ``finish()`` -> ``Verdict``: the other policies are checked once, with the whole reply's
   signals; then a block (the most severe) replaces everything, else prepends and appends are
   added, most severe first.

Shadow-mode hits are recorded and change nothing. An exception while evaluating a policy never
loses the reply: ``on_error: open`` records the error on the hit and changes nothing; ``closed``
blocks with the policy's block text or a generic safe text. Error texts name exception types and
detector names only, never anything a person wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from guardrail.policy.detectors import TextView
from guardrail.policy.model import (
    ACTION_ORDER,
    Conversation,
    EndTexts,
    Evidence,
    Hit,
    Policy,
    Verdict,
)
from guardrail.policy.rewrite import (
    GENERIC_BLOCK_TEXT,
    assemble,
    choose_variant,
    replace_sentence,
)
from guardrail.policy.text import normalise

if TYPE_CHECKING:
    from guardrail.policy.engine import PolicySet

__all__ = ["Scan"]

_END_ACTIONS = ("block", "prepend", "append")
MAX_EVIDENCE = 32
"""Evidence kept per detector (and per sentence-acting policy): the first matches only."""


def _error_text(exc: BaseException, failed: Mapping[str, str], names: Iterable[str]) -> str:
    """Describe a policy failure by exception type and detector name only (never text)."""
    for name in sorted(names):
        if name in failed:
            return f"detector {name!r} raised {failed[name]}"
    return f"{type(exc).__name__} while evaluating the policy"


class Scan:
    """The evaluation of one reply; per-request state only. Create with ``PolicySet.start``.

    Memory: with ``keep_text`` (the default) the scan keeps the reply's sentences to build
    ``Verdict.reply``; without it, it keeps no reply text at all, only counters, the signals and
    at most ``MAX_EVIDENCE`` evidence spans per detector, so a stream guard's memory does not grow
    with the reply. ``Verdict.reply`` then holds only what ``finish`` adds (the block text, or the
    prepends and appends joined as ``assemble`` joins them) and ``changed`` says whether a
    sentence was rewritten or an end text added.
    """

    def __init__(
        self,
        ps: PolicySet,
        conversation: Conversation,
        locale: str | None,
        *,
        whole_reply: str | None = None,
        keep_text: bool = True,
    ) -> None:
        self._ps = ps
        self._conv = conversation
        self.locale = ps.resources.resolve(locale)
        self._values: dict[str, bool] = {}
        self._evidence: dict[str, list[Evidence]] = {}
        self._failed: dict[str, str] = {}
        self._reply_keys: dict[str, set[str]] = {}
        self._sentence_hits: dict[str, list[Evidence]] = {}
        self._placed: set[str] = set()
        self._errors: dict[str, str] = {}
        self._keep_text = keep_text
        self._original: list[str] = []  # kept only with keep_text
        self._released: list[str] = []  # kept only with keep_text
        self._sentences = 0
        self._last_out = ""  # the last non-empty released text
        self._rewritten = False
        self._offset = 0
        self._in_quote = False
        self._earlier: list[str] | None = None
        self._verdict: Verdict | None = None
        self.end_texts = EndTexts()
        """The verdict's end-of-reply texts, separately; set by ``finish``."""
        self._run_context()
        # Knowing the whole reply up front (evaluate) only lets the scan skip reply detectors
        # that can match nowhere in it; the outcome is the same as feeding blind.
        self._reply_leaves = ps.reply_leaves
        if whole_reply is not None:
            view = TextView(whole_reply, ps.scanners["reply"])
            self._reply_leaves = tuple(leaf for leaf in ps.reply_leaves if leaf.may_match(view))
        for leaf in ps.reply_leaves:
            self._values[leaf.name] = False
            self._reply_keys[leaf.name] = set()

    # -------------------------------------------------------------- stage 1: context
    def _run_context(self) -> None:
        messages = self._conv.messages
        by_role: dict[str, list[int]] = {"user": [], "assistant": [], "system": []}
        for i, message in enumerate(messages):
            if message.role in by_role:
                by_role[message.role].append(i)
        views: dict[int, TextView] = {}
        for leaf in self._ps.context_leaves:
            if leaf.scope == "system":
                turns = by_role["system"]
            elif leaf.scope == "assistant_turns":
                turns = by_role["assistant"][-leaf.turns :]
            else:
                turns = by_role["user"][-(1 if leaf.scope == "last_user" else leaf.turns) :]
            keys: set[str] = set()
            evidence: list[Evidence] = []
            try:
                for i in turns:
                    view = views.get(i)
                    if view is None:
                        view = views[i] = TextView(
                            messages[i].content, self._ps.scanners.get(messages[i].role)
                        )
                    for start, end, key in leaf.find(view):
                        keys.add(key)
                        evidence.append(Evidence(leaf.name, leaf.scope, (start, end), i, None))
            except Exception as exc:  # noqa: BLE001 -- a detector failure must not lose the reply
                self._failed[leaf.name] = type(exc).__name__
                continue
            self._values[leaf.name] = len(keys) >= leaf.min_matches
            if evidence:
                self._evidence[leaf.name] = evidence

    # -------------------------------------------------------------- stage 2: sentences
    def feed_sentence(self, sentence: str) -> str:
        """Scan one sentence; return the text to release for it (maybe rewritten or "")."""
        if self._verdict is not None:
            raise RuntimeError("feed_sentence() after finish()")
        index = self._sentences
        self._sentences += 1
        view = TextView(sentence, self._ps.scanners["reply"], in_quote=self._in_quote)
        self._in_quote = view.ends_in_quote
        local: dict[str, bool] = dict.fromkeys(self._ps.sentence_leaves, False)
        here: dict[str, list[Evidence]] = {}
        for leaf in self._reply_leaves:
            name = leaf.name
            if name in self._failed:
                continue
            try:
                found = leaf.find(view)
            except Exception as exc:  # noqa: BLE001 -- a detector failure must not lose the reply
                self._failed[name] = type(exc).__name__
                self._values.pop(name, None)
                local.pop(name, None)
                continue
            if not found:
                continue
            keys = {key for _, _, key in found}
            if leaf.scope == "sentence" and len(keys) < leaf.min_matches:
                continue
            evidence = [
                Evidence(name, leaf.scope, (self._offset + s, self._offset + e), None, index)
                for s, e, _ in found
            ]
            here[name] = evidence
            kept = self._evidence.setdefault(name, [])
            kept.extend(evidence[: MAX_EVIDENCE - len(kept)])
            if leaf.scope == "reply":
                acc = self._reply_keys[name]
                if len(acc) < leaf.min_matches:  # more distinct keys would change nothing
                    acc.update(keys)
                self._values[name] = len(acc) >= leaf.min_matches
            else:
                local[name] = True
                self._values[name] = True
        out = sentence
        if self._ps.sentence_policies:
            out = self._sentence_actions(sentence, local, here)
        self._offset += len(sentence)
        if self._keep_text:
            self._original.append(sentence)
            self._released.append(out)
        if out:
            self._last_out = out
        self._rewritten = self._rewritten or out != sentence
        return out

    def _sentence_actions(
        self, sentence: str, local: dict[str, bool], here: dict[str, list[Evidence]]
    ) -> str:
        signals = self._ps.resolve_signals({**self._values, **local})
        remove = False
        winner: Policy | None = None
        for policy in self._ps.sentence_policies:
            if policy.id in self._errors:
                continue
            try:
                if not policy.condition.evaluate(signals):
                    continue
                located = sorted(policy.locators.intersection(here))
                if not located:
                    continue
                hits = self._sentence_hits.setdefault(policy.id, [])
                found = [e for name in located for e in here[name]]
                hits.extend(found[: MAX_EVIDENCE - len(hits)])
                if policy.mode != "enforce":
                    continue
                if policy.action("remove") is not None:
                    remove = True
                elif winner is None:
                    winner = policy
            except Exception as exc:  # noqa: BLE001 -- on_error decides, the reply survives
                self._errors[policy.id] = _error_text(exc, self._failed, policy.condition.names())
        if remove:
            return self._removed(sentence)
        if winner is None:
            return sentence
        if winner.id in self._placed:
            return self._removed(sentence)
        try:
            text = self._variant(winner, "replace")
        except Exception as exc:  # noqa: BLE001 -- on_error decides, the reply survives
            self._errors[winner.id] = _error_text(exc, self._failed, ())
            return sentence
        self._placed.add(winner.id)
        return replace_sentence(sentence, text)

    def _removed(self, sentence: str) -> str:
        """A removed sentence leaves only a line break it carried (keeps paragraphs apart)."""
        trail = sentence[len(sentence.rstrip()) :]
        previous = self._last_out
        if "\n" in trail and previous and not previous.endswith("\n"):
            return trail
        return ""

    def _variant(self, policy: Policy, kind: str) -> str:
        action = policy.action(kind)
        variants = action.variants(self.locale) if action is not None else ()
        if not variants:
            raise LookupError(f"no {kind} text")
        if self._earlier is None:
            self._earlier = [
                " ".join(normalise(m.content).split())
                for m in self._conv.messages
                if m.role == "assistant"
            ]
        return choose_variant(variants, policy.id, len(self._conv.messages), self._earlier)

    # -------------------------------------------------------------- stage 3: finish
    def _evidence_of(self, policy: Policy, signals: Mapping[str, bool]) -> tuple[Evidence, ...]:
        out: list[Evidence] = []
        for name in sorted(self._ps.policy_leaves[policy.id]):
            if signals.get(name) and not (policy.sentence_level and name in policy.locators):
                out.extend(self._evidence.get(name, ()))
        if policy.sentence_level:
            out.extend(self._sentence_hits.get(policy.id, ()))
        return tuple(out)

    def _judge(self, p: Policy, signals: Mapping[str, bool]) -> tuple[Hit, dict[str, str]] | None:
        """The end-of-reply outcome of one policy: its hit and end texts, or None. May raise."""
        hit = (p.id in self._sentence_hits) if p.sentence_level else p.condition.evaluate(signals)
        if not hit:
            return None
        texts = {}
        if p.mode == "enforce":
            texts = {k: self._variant(p, k) for k in _END_ACTIONS if p.action(k) is not None}
        evidence = self._evidence_of(p, signals)
        return Hit(p.id, p.category, p.severity, p.mode, p.strongest_action, evidence), texts

    def _failed_hit(self, p: Policy, error: str) -> tuple[Hit, str | None]:
        """The hit of a policy that raised, and its block text if it fails closed."""
        closed = p.on_error == "closed" and p.mode == "enforce"
        action = "block" if closed else p.strongest_action
        hit = Hit(p.id, p.category, p.severity, p.mode, action, (), error)
        if not closed:
            return hit, None
        try:
            return hit, self._variant(p, "block")
        except Exception:  # noqa: BLE001 -- fail closed with the generic text
            return hit, GENERIC_BLOCK_TEXT

    def finish(self) -> Verdict:
        """Check the end-of-reply policies and apply block/prepend/append. Idempotent."""
        if self._verdict is not None:
            return self._verdict
        ps = self._ps
        signals = ps.resolve_signals(self._values)
        hits: list[Hit] = []
        blocks: list[str] = []
        texts: dict[str, list[str]] = {"prepend": [], "append": []}
        strongest = 0
        for p in ps.policies:
            error = self._errors.get(p.id)
            if error is None:
                try:
                    judged = self._judge(p, signals)
                except Exception as exc:  # noqa: BLE001 -- on_error decides, the reply survives
                    error = _error_text(exc, self._failed, p.condition.names())
                else:
                    if judged is not None:
                        hit, end_texts = judged
                        hits.append(hit)
                        if p.mode == "enforce":
                            strongest = max(strongest, ACTION_ORDER.index(p.strongest_action))
                        blocks.extend(t for k, t in end_texts.items() if k == "block")
                        for kind in ("prepend", "append"):
                            if kind in end_texts:
                                texts[kind].append(end_texts[kind])
                    continue
            failed, block_text = self._failed_hit(p, error)
            hits.append(failed)
            if block_text is not None:
                blocks.append(block_text)
        body = "".join(self._released)  # "" without keep_text: only the end texts
        if blocks:  # policies are in (severity desc, id) order: the first is the most severe
            reply, strongest = blocks[0], ACTION_ORDER.index("block")
        else:
            reply = assemble(body, texts["prepend"], texts["append"])
        if self._keep_text:
            changed = reply != "".join(self._original)
        else:
            changed = self._rewritten or bool(blocks or texts["prepend"] or texts["append"])
        self._verdict = Verdict(
            reply=reply,
            hits=tuple(hits),
            signals={name: signals.get(name, False) for name in ps.published},
            changed=changed,
            blocked=bool(blocks),
            strongest_action=ACTION_ORDER[strongest],
            locale=self.locale,
        )
        self.end_texts = EndTexts(
            tuple(texts["prepend"]), tuple(texts["append"]), blocks[0] if blocks else None
        )
        return self._verdict
