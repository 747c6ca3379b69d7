"""Routes: which upstream, API and guard settings serve a request, chosen by its path prefix.

A route is read from the ``routes:`` config key (:func:`parse_routes`, at start-up: a bad entry is
a :class:`~guardrail.errors.ConfigError` naming ``routes[i].key``) and resolved against the
top-level keys, which are every route's defaults (``Settings.routes``). At request time
:class:`RouteTable` picks the route whose prefix matches the most leading path segments.

Matching and stripping (decided once, for every route):

* A prefix matches whole segments, compared after percent-decoding and case-folding: ``/openai``
  matches ``/openai`` and ``/OpenAI/v1/...``, not ``/openaix``. The longest match wins; ``/`` is
  the catch-all (implicitly the top-level ``upstream`` when one is set).
* The prefix is **stripped** before the path is joined onto the route's upstream:
  ``/openai/v1/chat/completions`` on ``{prefix: /openai, upstream: https://api.openai.com}``
  goes to ``https://api.openai.com/v1/chat/completions``. To keep it, put it in the upstream's
  base path (``upstream: https://host/openai``).
* No route matches: 404 ``no_route``, nothing is forwarded (no open proxy: every upstream comes
  from the configuration).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from guardrail.config import values as cv
from guardrail.errors import NoRoute, RouteError  # re-exported: their old home
from guardrail.policy.sources import PolicySource, as_list, parse_sources

__all__ = [
    "ROUTE_KEYS",
    "NoRoute",
    "Route",
    "RouteError",
    "RouteSpec",
    "RouteTable",
    "parse_routes",
]

ROUTE_KEYS = (
    "prefix",
    "upstream",
    "api",
    "policies",
    "locale",
    "holdback",
    "max_holdback_chars",
    "stall_timeout",
    "regenerate",
    "regenerate_budget",
    "minor",
)
"""The keys of one ``routes:`` entry; all but ``prefix`` default to the top-level key."""


@dataclass(frozen=True)
class Route:
    """Where requests under ``prefix`` go and how they are guarded (resolved: no inheritance).

    ``api``: ``auto`` (the API recognised from the path, see ``guardrail.guard.inspection``) or an API
    name, used for ``POST`` paths that are not a known chat endpoint. ``policies``: this route's
    own policy set (a folder, a file or a list of them), None for the main one.
    ``stall_timeout``: seconds a stream may go without an upstream event other than keep-alives
    (None: only ``timeouts.read`` applies, which keep-alives reset). ``regenerate``:
    ask the upstream once more when a policy requests it, within ``regenerate_budget`` seconds.
    ``minor``: every user of this route is a minor (``user.minor``, ``guardrail.state``).
    """

    prefix: str
    upstream: str
    api: str = "auto"
    policies: PolicySource | None = None
    locale: str | None = None
    holdback: str = "sentence"
    max_holdback_chars: int = 1000
    stall_timeout: float | None = None
    regenerate: bool = False
    regenerate_budget: float = 10.0
    minor: bool = False


@dataclass(frozen=True)
class RouteSpec:
    """One ``routes:`` entry as configured: its prefix and the keys it sets (the rest inherit)."""

    prefix: str
    given: tuple[tuple[str, Any], ...] = ()

    def resolve(self, defaults: Mapping[str, Any]) -> Route:
        """The route, with every key it does not set taken from ``defaults`` (top-level keys)."""
        given = dict(self.given)
        values: dict[str, Any] = {k: given.get(k, defaults.get(k)) for k in ROUTE_KEYS[1:]}
        own, main = given.get("policies"), defaults.get("policies")
        same = own is None or (main is not None and _same(own, main))
        values["policies"] = None if same else own  # None: the main set, reloaded with it
        values["minor"] = bool(values["minor"])  # no top-level default: off unless the route says
        return Route(prefix=self.prefix, **values)


def _same(a: PolicySource, b: PolicySource) -> bool:
    try:
        return [p.resolve() for p in as_list(a)] == [p.resolve() for p in as_list(b)]
    except OSError:
        return a == b



def _prefix(raw: object) -> str:
    text = cv.nonempty(raw)
    if not text.startswith("/") or any(c.isspace() or ord(c) < 0x20 for c in text):
        raise ValueError(f"must be a path starting with '/', got {raw!r}")
    if any(c in text for c in "?#\\%"):
        raise ValueError(f"must be a plain path (no '?', '#', '\\' or '%'), got {raw!r}")
    segments = text.strip("/").split("/") if text.strip("/") else []
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"must not have empty, '.' or '..' segments, got {raw!r}")
    return "/" + "/".join(segments)


_PARSERS: dict[str, Callable[[object], Any]] = {
    "upstream": cv.parse_upstream,
    "api": cv.api,
    "policies": cv.policy_sources,
    "locale": cv.locale,
    "holdback": cv.holdback,
    "max_holdback_chars": cv.int_in(1, 1_000_000),
    "stall_timeout": cv.optional_seconds,
    "regenerate": cv.boolean,
    "regenerate_budget": cv.seconds,
    "minor": cv.boolean,
}


def parse_routes(raw: object, base: Path | None = None) -> tuple[RouteSpec, ...]:
    """Parse a ``routes:`` list (YAML list of mappings, or its text from the environment).

    ``base``: folder that relative ``policies`` paths are relative to (the config file's).
    Raises ValueError (RouteError for a bad entry) on anything malformed or a repeated prefix.
    """
    if isinstance(raw, str):
        import yaml

        try:
            raw = yaml.safe_load(raw) if raw.strip() else []
        except yaml.YAMLError:
            raise ValueError("must be a YAML list of route mappings") from None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("must be a list of route mappings ({prefix, upstream, ...})")  # noqa: TRY004
    specs: list[RouteSpec] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        spec = _entry(index, entry, base)
        key = spec.prefix.lower()
        if key in seen:
            raise RouteError(index, f"prefix: {spec.prefix!r} repeats routes[{seen[key]}]")
        seen[key] = index
        specs.append(spec)
    return tuple(specs)


def _entry(index: int, entry: object, base: Path | None) -> RouteSpec:
    if not isinstance(entry, dict):
        raise RouteError(index, "prefix: each route must be a mapping with a 'prefix' key")
    unknown = sorted(str(k) for k in entry if k not in ROUTE_KEYS)
    if unknown:
        raise RouteError(index, f"{unknown[0]}: unknown key (known: {', '.join(ROUTE_KEYS)})")
    if "prefix" not in entry:
        raise RouteError(index, "prefix: missing (every route needs one)")
    try:
        prefix = _prefix(entry["prefix"])
    except ValueError as exc:
        raise RouteError(index, f"prefix: {exc}") from None
    given: list[tuple[str, Any]] = []
    for key in ROUTE_KEYS[1:]:
        if key not in entry:
            continue
        try:
            value = _PARSERS[key](entry[key])
        except ValueError as exc:
            raise RouteError(index, f"{key}: {exc}") from None
        if key == "policies" and base is not None:  # relative to the config file
            value = parse_sources(value, base)
        given.append((key, value))
    return RouteSpec(prefix, tuple(given))


# --------------------------------------------------------------------------- request time


def _fold(segment: bytes) -> str:
    return unquote(segment.decode("latin-1")).lower()


class RouteTable:
    """The configured routes, matched by longest path prefix (see the module docstring)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        keyed = [(tuple(s for s in r.prefix.lower().split("/") if s), r) for r in routes]
        self._routes = sorted(keyed, key=lambda pair: -len(pair[0]))

    @property
    def routes(self) -> tuple[Route, ...]:
        return tuple(route for _, route in self._routes)

    def match(self, raw_path: bytes) -> tuple[Route, bytes]:
        """The route for ``raw_path`` (no query) and the path left once its prefix is stripped.

        Raises NoRoute when no prefix matches."""
        raw = raw_path.split(b"/")[1:] if raw_path.startswith(b"/") else [raw_path]
        folded: list[str] | None = None
        for segments, route in self._routes:
            if not segments:
                return route, raw_path
            if folded is None:
                folded = [_fold(s) for s in raw[: max(len(s) for s, _ in self._routes)]]
            if tuple(folded[: len(segments)]) == segments:
                rest = b"/".join(raw[len(segments) :]).lstrip(b"/")
                return route, b"/" + rest
        raise NoRoute("no route for this path")
