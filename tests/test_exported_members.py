"""The public API is ``guardrail.__all__``: every name in it exists, and nothing else is public.

A change to the public surface is a deliberate act: update ``PUBLIC`` here, the README's
embedding section, and (for a removal or rename) the changelog.
"""

from __future__ import annotations
import __future__

import inspect
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import guardrail

from tests.kit.paths import ROOT

PUBLIC = {
    "Conversation",
    "ConversationLike",
    "GuardResult",
    "GuardrailError",
    "GuardrailMiddleware",
    "Hit",
    "Holdback",
    "Message",
    "PolicyError",
    "PolicySet",
    "TextGuard",
    "Verdict",
    "__version__",
    "check",
    "conversation",
    "load_policies",
}


def test_all_is_the_intended_public_api() -> None:
    assert sorted(guardrail.__all__) == sorted(set(guardrail.__all__))
    assert set(guardrail.__all__) == PUBLIC


def test_every_exported_member_exists() -> None:
    for name in guardrail.__all__:
        assert getattr(guardrail, name) is not None, name


def test_nothing_public_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(guardrail).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert public <= set(guardrail.__all__), public - set(guardrail.__all__)


def test_exported_callables_are_documented() -> None:
    for name in guardrail.__all__:
        member = getattr(guardrail, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert inspect.getdoc(member), name


@pytest.mark.slow
@pytest.mark.subprocess
def test_import_guardrail_stays_light() -> None:
    """The engine API does not pull in the web stack; the middleware loads on first use."""
    code = textwrap.dedent(
        """
        import sys, guardrail
        heavy = [m for m in ("starlette", "prometheus_client", "httpx") if m in sys.modules]
        assert not heavy, heavy
        from guardrail import GuardrailMiddleware
        from guardrail.middleware import GuardrailMiddleware as same
        assert GuardrailMiddleware is same and "starlette" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_attributes_still_raise() -> None:
    with pytest.raises(AttributeError):
        guardrail.NoSuchThing  # noqa: B018


def test_py_typed_ships() -> None:
    assert (ROOT / "guardrail" / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'guardrail = ["py.typed"]' in pyproject


TYPED_USAGE = """
from __future__ import annotations

from collections.abc import Iterable

from starlette.applications import Starlette

import guardrail
from guardrail import (
    Conversation, GuardResult, GuardrailMiddleware, Hit, Holdback, PolicySet, TextGuard, Verdict,
)


def rewrite(policies: PolicySet, messages: list[dict[str, str]], reply: str) -> str:
    verdict: Verdict = guardrail.check(policies, messages, reply, locale="en-GB")
    hits: tuple[Hit, ...] = verdict.hits
    flags: dict[str, bool] = dict(verdict.signals)
    assert isinstance(flags, dict) and isinstance(hits, tuple)
    return verdict.reply


def stream(policies: PolicySet, conv: Conversation, pieces: Iterable[str], mode: Holdback) -> str:
    guard = TextGuard(policies, conv, holdback=mode, max_holdback_chars=500)
    out = [guard.feed(piece) for piece in pieces]
    result: GuardResult = guard.finish()
    return "".join(out) + result.tail + result.append


def main() -> None:
    try:
        policies = guardrail.load_policies("policies")
    except guardrail.PolicyError as exc:
        print(exc.file, exc.line, exc.policy_id)
        raise
    conv = guardrail.conversation([{"role": "user", "content": "hi"}])
    print(rewrite(policies, [{"role": "user", "content": "hi"}], "Hello."))
    print(stream(policies, conv, ["Hel", "lo."], "sentence"))
    app = Starlette()
    app.add_middleware(GuardrailMiddleware, policies=policies, holdback="full")
    GuardrailMiddleware(app, policies="policies", paths={"/chat": "openai.chat"})
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_public_api_passes_mypy_strict(tmp_path: Path) -> None:
    usage = tmp_path / "usage.py"
    usage.write_text(TYPED_USAGE)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(config),
         "--follow-imports", "silent", "--cache-dir", str(tmp_path / "cache"), str(usage)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
