"""Locale resources (crisis lines, emergency numbers) and the text templates that use them.

Loaded once from the ``resources`` sections of a policy set's files, merged in order (a later
file or source may add locales, keys and aliases, never give a value again), then changed by the
override blocks (``compose_resources``). Guarantees after load: every locale defines the same
keys, each locale cites a ``source``, every alias points at a defined locale, and every action
text has been formatted for every locale, so nothing is formatted (or can fail to format) while
a reply is being evaluated.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from guardrail.policy.yamlsource import Fields, Src, YMap

__all__ = [
    "NO_LOCALE",
    "Resources",
    "build_resources",
    "compose_resources",
    "format_text",
    "template_fields",
]

NO_LOCALE = "und"  # the one locale of a policy set without resources


@dataclass(frozen=True, slots=True)
class Resources:
    """Resources per locale; ``resolve`` maps a requested locale to a defined one."""

    locales: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: {NO_LOCALE: {}})
    default_locale: str = NO_LOCALE
    aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.locales[self.default_locale])

    def resolve(self, requested: str | None) -> str:
        """The locale to use: exact, then alias, then case-insensitively; unknown -> ``intl`` if
        defined, else the default locale."""
        if not requested:
            return self.default_locale
        if requested in self.locales:
            return requested
        if requested in self.aliases:
            return self.aliases[requested]
        folded = requested.lower().replace("_", "-")
        for name in self.locales:
            if name.lower() == folded:
                return name
        for alias, target in self.aliases.items():
            if alias.lower() == folded:
                return target
        return "intl" if "intl" in self.locales else self.default_locale


def template_fields(text: str) -> list[str]:
    """The ``{field}`` names a template uses; raises ValueError on a malformed template."""
    names = []
    for _, name, spec, conv in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"template field {{{name}}} is not a resource key name")
        if spec or conv:
            raise ValueError(f"template field {{{name}}} may not carry a format spec")
        names.append(name)
    return names


def format_text(text: str, values: Mapping[str, str]) -> str:
    """Fill a template already checked by ``template_fields``."""
    return text.format_map(values)


def build_resources(value: object, src: Src) -> Resources:
    """The ``resources`` section read at ``src``, checked (see the module docstring)."""
    return compose_resources([(value, src)])


@dataclass
class _Draft:
    """Resources gathered from every section, with where each thing was written."""

    locales: dict[str, dict[str, str]] = field(default_factory=dict)
    where: dict[str, Src] = field(default_factory=dict)
    key_where: dict[tuple[str, str], Src] = field(default_factory=dict)
    default: tuple[str, Src] | None = None
    aliases: dict[str, tuple[str, Src]] = field(default_factory=dict)


_HINT = "; change it under 'overrides: resources:' instead"


def compose_resources(
    sections: Sequence[tuple[object, Src]], overrides: Sequence[tuple[object, Src]] = ()
) -> Resources:
    """The ``resources`` sections of every source, merged in order, then the override blocks'
    ``resources`` applied, then checked (see the module docstring).

    A later section may add locales, keys and aliases; giving again a value, a
    ``default_locale`` or an alias that an earlier section gave is an error naming both places
    (the override block changes values). An override names only defined locales and keys."""
    if not sections:
        return Resources()
    draft = _Draft()
    for value, src in sections:
        _section(draft, value, src)
    for value, src in overrides:
        _override(draft, value, src)
    return _finish(draft, sections[0][1])


def _value(item: object, src: Src, what: str) -> str:
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        item = str(item)
    return src.expect(item, str, what)


def _section(draft: _Draft, value: object, src: Src) -> None:
    f = Fields(value, src, "'resources'", ("locales", "default_locale", "aliases"))
    if f.has("locales"):
        locales_map = f.need("locales", YMap)
        if not locales_map:
            raise f.at("locales").error("'locales' must define at least one locale")
        for locale, entries in locales_map.items():
            where = f.src.at(locales_map.key_lines[locale])
            raw = where.expect(entries, YMap, f"locale {locale!r}")
            draft.where.setdefault(locale, where)
            values = draft.locales.setdefault(locale, {})
            for key, item in raw.items():
                item_src = where.at(raw.key_lines[key])
                first = draft.key_where.get((locale, key))
                if first is not None:
                    raise item_src.error(
                        f"resource {key!r} of locale {locale!r} is already defined at "
                        f"{first.file}:{first.line}{_HINT}"
                    )
                values[key] = _value(item, item_src, f"{key!r} of locale {locale!r}")
                draft.key_where[(locale, key)] = item_src
    if f.has("default_locale"):
        default = f.need("default_locale", str)
        if draft.default is not None:
            first = draft.default[1]
            raise f.at("default_locale").error(
                f"'default_locale' is already set at {first.file}:{first.line}{_HINT}"
            )
        draft.default = (default, f.at("default_locale"))
    if f.has("aliases"):
        amap = f.need("aliases", YMap)
        for alias, target in amap.items():
            asrc = f.src.at(amap.key_lines[alias])
            if alias in draft.aliases:
                first = draft.aliases[alias][1]
                raise asrc.error(
                    f"alias {alias!r} is already defined at {first.file}:{first.line}{_HINT}"
                )
            draft.aliases[alias] = (asrc.expect(target, str, f"alias {alias!r}"), asrc)


def _override(draft: _Draft, value: object, src: Src) -> None:
    """``overrides: resources:``: new values for defined keys of defined locales, another
    ``default_locale``, aliases pointed elsewhere."""
    f = Fields(value, src, "'overrides: resources'", ("locales", "default_locale", "aliases"))
    if f.has("locales"):
        locales_map = f.need("locales", YMap)
        for locale, entries in locales_map.items():
            where = f.src.at(locales_map.key_lines[locale])
            if locale not in draft.locales:
                known = ", ".join(draft.locales)
                raise where.error(
                    f"override names undefined locale {locale!r} (defined: {known}); "
                    "a new locale goes under 'resources: locales:', with every key"
                )
            raw = where.expect(entries, YMap, f"locale {locale!r}")
            for key, item in raw.items():
                item_src = where.at(raw.key_lines[key])
                if (locale, key) not in draft.key_where:
                    known = ", ".join(sorted(draft.locales[locale]))
                    raise item_src.error(
                        f"override names undefined resource {key!r} of locale {locale!r} "
                        f"(defined: {known}); a new key goes under 'resources:', in every locale"
                    )
                draft.locales[locale][key] = _value(item, item_src, f"{key!r} of locale {locale!r}")
    if f.has("default_locale"):
        draft.default = (f.need("default_locale", str), f.at("default_locale"))
    if f.has("aliases"):
        amap = f.need("aliases", YMap)
        for alias, target in amap.items():
            asrc = f.src.at(amap.key_lines[alias])
            draft.aliases[alias] = (asrc.expect(target, str, f"alias {alias!r}"), asrc)


def _finish(draft: _Draft, first_src: Src) -> Resources:
    if not draft.locales:
        raise first_src.error("'resources' lacks required key 'locales'")
    first: tuple[str, frozenset[str]] | None = None
    for locale, values in draft.locales.items():
        where = draft.where[locale]
        if "source" not in values:
            raise where.error(f"locale {locale!r} must cite a 'source' for its numbers")
        keys = frozenset(values)
        if first is None:
            first = (locale, keys)
            continue
        diff = sorted(keys.symmetric_difference(first[1]))
        if not diff:
            continue
        key = diff[0]
        holder = locale if key in keys else first[0]
        key_src = draft.key_where[(holder, key)]
        if key_src.file != where.file:  # a later source added a key to some locales only
            lacking = first[0] if holder == locale else locale
            raise key_src.error(
                f"resource {key!r} of locale {holder!r} is not defined for locale {lacking!r}: "
                "every locale needs the same keys"
            )
        raise where.error(
            f"locale {locale!r} defines different keys than {first[0]!r}: " + ", ".join(diff)
        )
    if draft.default is None:
        raise first_src.error("'resources' lacks required key 'default_locale'")
    default, default_src = draft.default
    if default not in draft.locales:
        raise default_src.error(f"default_locale {default!r} is not a defined locale")
    aliases: dict[str, str] = {}
    for alias, (target, asrc) in draft.aliases.items():
        if target not in draft.locales:
            raise asrc.error(f"alias {alias!r} points at undefined locale {target!r}")
        aliases[alias] = target
    return Resources(locales=draft.locales, default_locale=default, aliases=aliases)
