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

__all__ = ["NO_LOCALE", "Resources", "format_text", "template_fields"]

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
