"""Locale resources (crisis lines, emergency numbers) and the text templates that use them.

Loaded once from the ``resources`` section of one policy file. Guarantees after load: every locale
defines the same keys, each locale cites a ``source``, every alias points at a defined locale, and
every action text has been formatted for every locale, so nothing is formatted (or can fail to
format) while a reply is being evaluated.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from guardrail.policy.yamlsource import Fields, Src, YMap

__all__ = ["NO_LOCALE", "Resources", "build_resources", "format_text", "template_fields"]

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
    f = Fields(value, src, "'resources'", ("locales", "default_locale", "aliases"))
    locales_map = f.need("locales", YMap)
    if not locales_map:
        raise f.at("locales").error("'locales' must define at least one locale")
    locales: dict[str, dict[str, str]] = {}
    first_keys: tuple[str, frozenset[str]] | None = None
    for locale, entries in locales_map.items():
        where = f.src.at(locales_map.key_lines[locale])
        raw = where.expect(entries, YMap, f"locale {locale!r}")
        values: dict[str, str] = {}
        for key, item in raw.items():
            item_src = where.at(raw.key_lines[key])
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            values[key] = item_src.expect(item, str, f"{key!r} of locale {locale!r}")
        if "source" not in values:
            raise where.error(f"locale {locale!r} must cite a 'source' for its numbers")
        keys = frozenset(values)
        if first_keys is None:
            first_keys = (locale, keys)
        elif keys != first_keys[1]:
            diff = sorted(keys.symmetric_difference(first_keys[1]))
            raise where.error(
                f"locale {locale!r} defines different keys than {first_keys[0]!r}: "
                + ", ".join(diff)
            )
        locales[locale] = values
    default = f.need("default_locale", str)
    if default not in locales:
        raise f.at("default_locale").error(f"default_locale {default!r} is not a defined locale")
    aliases: dict[str, str] = {}
    if f.has("aliases"):
        amap = f.need("aliases", YMap)
        for alias, target in amap.items():
            asrc = f.src.at(amap.key_lines[alias])
            if asrc.expect(target, str, f"alias {alias!r}") not in locales:
                raise asrc.error(f"alias {alias!r} points at undefined locale {target!r}")
            aliases[alias] = target
    return Resources(locales=locales, default_locale=default, aliases=aliases)
