"""Policy sources: where a policy set is read from, and the name of the bundled pack.

A policy set is read from one source or an ordered list of them. A source is a folder (every
``*.yaml`` / ``*.yml`` directly in it) or one YAML file; the name ``default`` stands for the
bundled pack (:data:`DEFAULT_PACK`: ``guardrail/pack/`` in an installed wheel, the repository's
``policies/`` in a checkout). How the sources of a list are combined (later ones use and tune
what earlier ones define) is ``guardrail.policy.loader``'s business; this module only names them.

Guarantees of :func:`parse_sources`: the result is never empty, every name is resolved (``default``
to the pack's folder, a relative path against ``base`` when one is given), no source is listed
twice, and one source comes back as a plain ``Path``, so a configuration that names a single
folder keeps the type it always had. A list comes back as a tuple of paths, in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TypeAlias


__all__ = [
    "DEFAULT_PACK",
    "PACK_NAME",
    "PolicySource",
    "as_list",
    "describe",
    "parse_sources",
]

_PACKAGE = Path(__file__).resolve().parent.parent  # guardrail/
_PACKAGED = _PACKAGE / "pack"  # in an installed wheel
DEFAULT_PACK = _PACKAGED if _PACKAGED.is_dir() else _PACKAGE.parent / "policies"
"""The bundled default pack: ``guardrail/pack/`` as package data, else the repository's
``policies/`` folder beside the package (a checkout or an editable install)."""

PACK_NAME = "default"
"""The name that stands for :data:`DEFAULT_PACK` in a list of sources (write ``./default`` for a
folder of that name)."""

PolicySource: TypeAlias = Path | tuple[Path, ...]
"""One source (a folder or file) or an ordered list of them."""


def as_list(source: PolicySource) -> tuple[Path, ...]:
    """The sources in order (one source: a list of one)."""
    return source if isinstance(source, tuple) else (source,)


def describe(source: PolicySource) -> str:
    """For logs and errors: the sources joined with ", ", the pack shown as ``default``."""
    return ", ".join(PACK_NAME if p == DEFAULT_PACK else str(p) for p in as_list(source))


def _items(raw: object, commas: bool) -> list[str]:
    if isinstance(raw, Path) or (isinstance(raw, str) and not commas):
        return [str(raw)]
    if isinstance(raw, str):
        items = raw.split(",")  # the environment and a flag give a comma-separated list
        if len(items) > 1 and not all(item.strip() for item in items):
            raise ValueError(f"must not have an empty item in a comma-separated list, got {raw!r}")
        return items
    if isinstance(raw, Iterable) and not isinstance(raw, (bytes, dict)):
        out = []
        for item in raw:
            if isinstance(item, (str, Path)) and str(item).strip():
                out.append(str(item))
            else:
                raise ValueError(
                    "each item must be a policy folder, a YAML file or 'default', "
                    f"got {item!r}"
                )
        return out
    raise ValueError(
        f"must be a policy folder, a YAML file, 'default' or a list of them, got {raw!r}"
    )


def parse_sources(raw: object, base: Path | None = None, *, commas: bool = True) -> PolicySource:
    """A source or a list of sources from a config value, an environment value or a flag
    (a string is comma-separated), or from a program (``commas=False``: a string is one path;
    a list is a list). See the module docstring for what is guaranteed. Raises ValueError."""
    items = [item.strip() for item in _items(raw, commas)]
    if not items or not all(items):
        raise ValueError(f"must name at least one policy folder, file or 'default', got {raw!r}")
    out: list[Path] = []
    for item in items:
        path = DEFAULT_PACK if item == PACK_NAME else Path(item).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if path in out:
            raise ValueError(f"names {item!r} twice")
        out.append(path)
    return out[0] if len(out) == 1 else tuple(out)
