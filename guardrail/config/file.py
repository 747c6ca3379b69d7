"""Read the YAML config file into dotted keys, each with the line it came from.

Pure apart from reading the one file. Unknown keys, duplicate keys, malformed YAML and a file
that is not a mapping are :class:`~guardrail.errors.ConfigError` naming the file and line, so a
typo stops start-up instead of being ignored. Values are returned raw: ``guardrail.config.settings``
parses and validates them.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import yaml

from guardrail.errors import ConfigError

__all__ = ["read_config_file"]


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or "malformed YAML"
    return ConfigError(f"config file {where}: invalid YAML: {problem}")


def read_config_file(
    path: Path, keys: Collection[str], sections: Collection[str]
) -> dict[str, tuple[object, int]]:
    """``{dotted key: (raw value, line)}`` of the config file at ``path``.

    ``keys`` are the known dotted names; ``sections`` the names of nested mappings
    (``timeouts``, ``audit``). Any other key is an error listing the known ones.
    """
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if node is None:
        return {}
    out: dict[str, tuple[object, int]] = {}
    _flatten(path, node, data, "", out, keys, sections)
    return out


def _flatten(
    path: Path,
    node: yaml.Node,
    data: object,
    prefix: str,
    out: dict[str, tuple[object, int]],
    keys: Collection[str],
    sections: Collection[str],
) -> None:
    where = f"config file {path}:{node.start_mark.line + 1}"
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        what = f"{prefix.rstrip('.')!r}" if prefix else "the file"
        raise ConfigError(f"{where}: {what} must be a mapping of settings")
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        name = prefix + str(key_node.value)
        if name in out:
            raise ConfigError(f"config file {path}:{line}: duplicate key {name!r}")
        if name in sections:
            value = data.get(key_node.value)
            _flatten(path, value_node, value, name + ".", out, keys, sections)
        elif name in keys and isinstance(key_node.value, str):
            out[name] = (data.get(key_node.value), line)
        else:
            known = ", ".join(sorted(keys))
            raise ConfigError(f"config file {path}:{line}: unknown key {name!r} (known: {known})")
