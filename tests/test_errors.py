"""One exception tree: every exception guardrail raises on purpose is a GuardrailError, lives in
guardrail.errors, and is drawn in that module's docstring (its old import paths still work)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import guardrail
from guardrail import errors


def _modules() -> list[object]:
    names = [m.name for m in pkgutil.walk_packages(guardrail.__path__, "guardrail.")]
    return [importlib.import_module(name) for name in names if not name.endswith("__main__")]


def test_every_public_exception_class_is_in_the_one_tree() -> None:
    """Walk every module of the package: a public exception class defined anywhere but in
    guardrail.errors, or outside GuardrailError, or missing from the drawn tree, fails."""
    found: dict[str, type[BaseException]] = {}
    for module in _modules():
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException):
                if value.__module__.startswith("guardrail") and not name.startswith("_"):
                    found[name] = value
    assert found, "no exception classes found"
    for name, cls in found.items():
        assert cls.__module__ == "guardrail.errors", f"{name} is defined in {cls.__module__}"
        assert issubclass(cls, errors.GuardrailError), name
        assert f"{name} " in (errors.__doc__ or ""), f"{name} is not drawn in errors.py"


def test_old_import_paths_keep_working() -> None:
    from guardrail.formats.codings import TooLarge, Undecodable
    from guardrail.formats import FormatError
    from guardrail.proxy.limits import ClientBusy, Refused, RequestTooLarge
    from guardrail.policy.boundedregex import RegexTimeout
    from guardrail.config.routes import NoRoute, RouteError
    from guardrail.guard.stall import Stalled
    from guardrail.proxy.upstream import RelayAborted, UnsafeTarget

    for cls in (TooLarge, Undecodable, FormatError, ClientBusy, Refused, RequestTooLarge,
                RegexTimeout, NoRoute, RouteError, Stalled, RelayAborted, UnsafeTarget):
        assert getattr(errors, cls.__name__) is cls
    # the builtin bases callers may catch them by are kept
    assert issubclass(FormatError, ValueError) and issubclass(NoRoute, LookupError)
    assert issubclass(RegexTimeout, TimeoutError) and issubclass(RouteError, ValueError)
