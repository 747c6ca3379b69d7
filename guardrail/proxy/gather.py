"""Gather one request's facts beside its upstream call: the state store's and the judges'.

Started as soon as the request is read (:meth:`Gathering.start`), before it is forwarded, so the
state lookup and the judges that read only the conversation run while the upstream thinks: when
they answer first they add no latency. The flow gets the result (:meth:`Gathering.facts`) just
before the reply is judged; ``reply`` judges are asked then, with the reply's text (a whole
reply), or not at all (a stream: their text is out before they could answer, so they count as
unanswered and their fail mode applies).

A policy set with no fact or judge detector gathers nothing: :meth:`Gathering.start` returns
None and the reply is judged as it always was. A request whose facts need no store lookup (no
user identified, or no stored fact read) gets the clock's facts at once, without a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from guardrail.guard.flow import Flow
from guardrail.state.link import StateLink

if TYPE_CHECKING:
    from guardrail.judge.runner import JudgeRunner, PendingAnswers

__all__ = ["Gathering"]

Facts = dict[str, float | bool | None]


class Gathering:
    """The facts of one request in flight (state, clock, judges)."""

    def __init__(
        self,
        state: asyncio.Task[dict[str, float | bool]] | Mapping[str, float | bool] | None,
        judges: PendingAnswers | None,
    ) -> None:
        self._state = state
        self._judges = judges

    @classmethod
    def start(
        cls,
        flow: Flow,
        headers: Mapping[str, str],
        *,
        link: StateLink | None,
        runner: JudgeRunner | None,
        minor_route: bool = False,
    ) -> Gathering | None:
        """Start what the flow's policies read besides text (None: they read nothing else)."""
        policies: Any = flow.policies
        if flow.chat is None or not getattr(policies, "fact_leaves", ()):
            return None
        state = None
        if link is not None:
            now = link.clock.now()
            identity = link.identify(headers, flow.chat, minor_route=minor_route)
            link.follow(flow, identity, now)
            needed: frozenset[str] = getattr(policies, "state_facts_needed", frozenset())
            known = link.known_facts(identity, now, needed)  # no store lookup: no task either
            state = known if known is not None else asyncio.ensure_future(
                link.facts(identity, now, needed)
            )
        judges = None
        questions = tuple(getattr(policies, "judges", ()))
        if runner is not None and questions:
            judges = runner.prefetch(questions, flow.chat.conversation.messages)
        return cls(state, judges)

    @property
    def reads_reply(self) -> bool:
        """Some judge reads the reply: a whole reply's text is wanted before judging."""
        return self._judges is not None and self._judges.reads_reply

    async def facts(self, reply_text: str | None) -> Facts | None:
        """Everything gathered (None: nothing, as for a request without a user or judges);
        waits for what is still on its way."""
        facts: Facts = {}
        if isinstance(self._state, asyncio.Task):
            facts.update(await self._state)
        elif self._state is not None:
            facts.update(self._state)
        if self._judges is not None:
            facts.update(await self._judges.result(reply_text))
        return facts or None

    def cancel(self) -> None:
        """The exchange is abandoned (the upstream failed, the client left)."""
        if isinstance(self._state, asyncio.Task):
            self._state.cancel()
        if self._judges is not None:
            self._judges.cancel()
