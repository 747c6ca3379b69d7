"""The policy sets in service: the main one and each route's own, each behind a holder.

:class:`PolicyHolder` holds one set; a reload swaps it in one assignment. A request takes
``holder.current`` once when it starts and keeps that set to its end, so a swap never changes the
rules under a request in flight.

:class:`PolicySets` maps routes to holders: a route without its own ``policies`` (or naming the
main source) shares the main holder; routes naming the same source (or the same list of sources)
share one holder. Reload (``guardrail.proxy.reload.Reloader``) sees one policy source, the main one;
:meth:`PolicySets.load` and :meth:`PolicySets.install` are its ``load`` and ``on_install`` hooks,
so every route's set is loaded with the main one and installed just before it, under the
reloader's lock: if any set fails to load, the reload is refused whole and every route keeps its
last good set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from guardrail.guard.inspection import PolicyEngine
from guardrail.policy import PolicySet, load_policies
from guardrail.policy.sources import PolicySource
from guardrail.config.routes import Route

__all__ = ["PolicyHolder", "PolicySets"]


class PolicyHolder:
    """Holds the current policy set; a reload swaps it in one assignment."""

    def __init__(self, policies: PolicyEngine) -> None:
        self._current = policies

    @property
    def current(self) -> PolicyEngine:
        return self._current

    def swap(self, policies: PolicyEngine) -> PolicyEngine:
        """Install ``policies`` for requests that start from now on; returns the previous set."""
        previous, self._current = self._current, policies
        return previous


class PolicySets:
    """The main holder and one holder per other policy source used by a route."""

    def __init__(
        self,
        main: PolicyHolder,
        own: Mapping[PolicySource, PolicyHolder] | None = None,
        *,
        load: Callable[[PolicySource], PolicySet] = load_policies,
        max_user_chars: int | None = None,
    ) -> None:
        self.main = main
        self.own = dict(own or {})
        self._load = load
        self._pending: dict[PolicySource, PolicySet] = {}
        self.max_user_chars = max_user_chars
        """Set on every policy set held, now and at each reload (None: leave each as it is)."""
        for engine in self.current():
            self._bound(engine)

    def _bound(self, engine: PolicyEngine) -> PolicyEngine:
        if self.max_user_chars is not None and isinstance(engine, PolicySet):
            engine.max_user_chars = self.max_user_chars
        return engine

    @classmethod
    def for_routes(
        cls,
        main: PolicyEngine,
        routes: tuple[Route, ...],
        loaded: Mapping[PolicySource, PolicyEngine] | None = None,
        *,
        load: Callable[[PolicySource], PolicySet] = load_policies,
        max_user_chars: int | None = None,
    ) -> PolicySets:
        """Holders for ``routes``; each own source taken from ``loaded`` or loaded now (raises
        PolicyError, at start-up, for a set that does not load)."""
        own: dict[PolicySource, PolicyHolder] = {}
        for route in routes:
            if route.policies is not None and route.policies not in own:
                ready = (loaded or {}).get(route.policies)
                own[route.policies] = PolicyHolder(
                    ready if ready is not None else load(route.policies)
                )
        return cls(PolicyHolder(main), own, load=load, max_user_chars=max_user_chars)

    def holder(self, route: Route) -> PolicyHolder:
        """The holder of ``route``'s policy set."""
        return self.main if route.policies is None else self.own[route.policies]

    @property
    def sources(self) -> tuple[PolicySource, ...]:
        """The routes' own policy sources (the main source is the reloader's)."""
        return tuple(self.own)

    def current(self) -> list[PolicyEngine]:
        """Every set in service, the main one first."""
        return [self.main.current, *(holder.current for holder in self.own.values())]

    # ------------------------------------------------------------------ reload hooks
    def load(self, source: PolicySource) -> PolicySet:
        """The reloader's ``load``: the main set from ``source``, and every route's own set,
        kept for :meth:`install`. Raises PolicyError if any of them does not load."""
        pending = {path: self._load(path) for path in self.own}
        main = self._load(source)
        for engine in (main, *pending.values()):
            self._bound(engine)
        self._pending = pending
        return main

    def installer(self, install: Callable[[PolicySet], None]) -> Callable[[PolicySet], None]:
        """The reloader's ``on_install``: ``install`` (metric series) each new set, swap the
        routes' own sets in, then let the reloader swap the main one."""

        def on_install(main: PolicySet) -> None:
            pending, self._pending = self._pending, {}
            for policies in pending.values():
                install(policies)
            install(main)
            for path, policies in pending.items():
                self.own[path].swap(policies)

        return on_install
