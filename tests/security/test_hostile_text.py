"""Hostile and unlucky text: lone surrogates, NUL and invalid UTF-8, in either direction.

Issue 11, defects 2 and 3 and must-be-true item 2: the crisis line survives any input. A lone
surrogate (``"\\ud800"``: half an emoji, cut by a client or a model, which JSON carries as an
escape) used to make every policy fail on encoding: ``referral.crisis`` fell back to a generic
text without the crisis line, ``referral.distress`` dropped its referral, and the same surrogate
in a reply that was rewritten turned it into a 500. Here the real proxy (uvicorn on loopback,
the default pack, the audit trail on) is driven on all four APIs, whole and streamed, with each
kind of hostile text in the request and in the upstream's reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.policy import scan as scan_module
from guardrail.config.settings import DEFAULT_POLICIES, Settings

from tests.kit.servers import Background, read_body
from tests.kit.upstreams import MockAPI, quoted
from tests.kit.wire import PATHS, read_stream, read_whole, request_body

pytestmark = pytest.mark.slow  # 86 hostile texts through the app, four APIs, whole and streamed

MARK = "\u2603"
"""Stands for the hostile text while bodies are built; swapped for its bytes on the wire."""
HOSTILE = {
    "surrogate": b"\\ud800",  # a lone high surrogate, as a JSON escape
    "half-emoji": b"\\ude00",  # the low half of an emoji
    "nul": b"\\u0000",
    "invalid-utf8": b"\xff\xfe\xc3",  # bytes no UTF-8 decoder accepts
}
APIS = tuple(PATHS)
CRISIS = f"I want to die.{MARK} I can't do this anymore."
DISTRESS = f"I feel so alone and hopeless lately.{MARK}"
REPLY = f"Maybe a change of scenery{MARK} would help, like a short trip this weekend."
CALM_REPLY = "Maybe a change of scenery would help, like a short trip this weekend."


def _swap(data: bytes, kind: str) -> bytes:
    """``data`` with every mark (raw UTF-8 or a JSON escape) replaced by the hostile bytes."""
    bad = HOSTILE[kind]
    return data.replace(MARK.encode(), bad).replace(b"\\u2603", bad)


class HostileUpstream:
    """The MockAPI, whose reply bytes carry the hostile text named by ``x-hostile`` in place of
    the mark; it records each request body as the proxy forwarded it."""

    def __init__(self) -> None:
        self.mock = MockAPI()
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.mock(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        kind = headers.get("x-hostile")
        body = await read_body(receive)
        self.bodies.append(body)
        readable = body.decode("utf-8", "replace").encode()  # the mock must read the request
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": readable, "more_body": False}

        async def hostile_send(message: dict[str, Any]) -> None:
            if kind and message["type"] == "http.response.body":
                message = {**message, "body": _swap(message.get("body", b""), kind)}
            await send(message)

        await self.mock(scope, replay, hostile_send)


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.background = Background()
        self.upstream = HostileUpstream()
        url = self.background.serve_asgi(self.upstream)
        self.audit = tmp / "audit.jsonl"
        audit = AuditConfig(sink="file", path=self.audit, excerpt=True)
        settings = Settings(upstream=url, audit=audit)
        app = build_app(settings, load_policies(DEFAULT_POLICIES))
        self.proxy = self.background.serve_asgi(app)

    def post(
        self, api: str, user: str, reply: str, *, stream: bool, request: str | None = None,
        answer: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Send ``user`` (hostile bytes of kind ``request`` in place of the mark) and have the
        upstream answer ``reply`` (hostile bytes of kind ``answer``); the text the client
        assembles and the annotation."""
        raw = json.dumps(
            request_body(api, [{"role": "user", "content": user}], stream=stream),
            ensure_ascii=False,
        ).encode()
        if request is not None:
            raw = _swap(raw, request)
        headers = {"content-type": "application/json", "x-mock-reply": quoted(reply)}
        if answer is not None:
            headers["x-hostile"] = answer
        got = httpx.post(self.proxy + PATHS[api], content=raw, headers=headers, timeout=20)
        assert got.status_code == 200, got.content[:300]
        assert self.upstream.bodies[-1] == raw  # the request is forwarded byte for byte
        # what a client's decoder reads (a byte no UTF-8 decoder accepts shows as U+FFFD)
        data = got.content.decode("utf-8", "replace").encode("utf-8", "surrogatepass")
        text, note = read_stream(api, data) if stream else read_whole(api, data)
        assert note is not None and note["inspected"] is True, note
        return text, note


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    built = Stack(tmp_path_factory.mktemp("hostile"))
    try:
        yield built
    finally:
        built.background.close()


def _leads_with_crisis_line(text: str) -> bool:
    first = text.split("\n\n")[0]
    return "988" in first and "911" in first


def _hit(note: dict[str, Any], policy: str) -> dict[str, Any]:
    hits = [h for h in note["hits"] if h["policy"] == policy]
    assert hits, note["hits"]
    return hits[0]


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_text_in_the_request_keeps_the_crisis_line(
    stack: Stack, api: str, stream: bool, kind: str
) -> None:
    """Half an emoji, a NUL or bytes that are not UTF-8 in the person's message (a client cut a
    string badly, or someone tries to switch the guardrail off): the reply still leads with the
    locale's crisis line and emergency number, and the model's reply is kept."""
    text, note = stack.post(api, CRISIS, CALM_REPLY, stream=stream, request=kind)
    assert _leads_with_crisis_line(text), text
    assert "change of scenery would help" in text
    assert "error" not in _hit(note, "referral.crisis")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_text_in_the_reply_is_rewritten_not_lost(
    stack: Stack, api: str, stream: bool, kind: str
) -> None:
    """The same bytes in the upstream's reply to a person in crisis: the rewrite happens (no
    500, the reply is not lost), the crisis line leads, and the reply's other words arrive."""
    text, note = stack.post(api, "I want to die.", REPLY, stream=stream, answer=kind)
    assert _leads_with_crisis_line(text), text
    assert "Maybe a change of scenery" in text and "would help, like a short trip" in text
    assert "error" not in _hit(note, "referral.crisis")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", APIS)
def test_hostile_text_both_ways_keeps_the_distress_referral(
    stack: Stack, api: str, stream: bool
) -> None:
    """A lone surrogate in the message of a person in distress and one in the reply: the
    distress referral is still added (it used to be dropped silently)."""
    text, note = stack.post(api, DISTRESS, REPLY, stream=stream, request="surrogate",
                            answer="surrogate")
    assert "error" not in _hit(note, "referral.distress")
    assert text.startswith("Maybe a change of scenery")
    assert text.split("\n\n")[-1] != text and "short trip" in text.split("\n\n")[0]


def test_the_audit_trail_survives_hostile_text(stack: Stack) -> None:
    """Audit events (HMAC of the first message, excerpts on) of a request whose matched span
    holds a lone surrogate are written whole, as valid UTF-8 JSON lines with the surrogate as
    its escape (the write used to fail and the events were lost)."""
    user = f"I used to love painting {MARK} but now I don't care about anything."
    stack.post("openai.chat", user, REPLY, stream=False, request="surrogate", answer="surrogate")
    lines = stack.audit.read_bytes().decode("utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    excerpts = [x["text"] for e in events if e["policy"] == "referral.distress"
                for x in e.get("excerpts", [])]
    assert any("\ud800" in text for text in excerpts), excerpts


# --------------------------------------------------------------------------- a failing policy


@pytest.fixture
def pack() -> PolicySet:
    return load_policies(DEFAULT_POLICIES)


def _break_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variant choice raises, as the encoding of a lone surrogate once did."""

    def broken(*args: object, **kwargs: object) -> str:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(scan_module, "choose_variant", broken)


@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "en-GB", "fr-FR"])
def test_the_crisis_policy_failing_closed_still_gives_the_crisis_line(
    pack: PolicySet, monkeypatch: pytest.MonkeyPatch, locale: str
) -> None:
    """``referral.crisis`` fails closed; its fallback is its own crisis text for the locale
    (crisis line and emergency number), not a generic message without either."""
    _break_choice(monkeypatch)
    conv = Conversation.of(("user", "I want to die."))
    verdict = pack.evaluate(conv, "Have you tried a walk?", locale=locale)
    crisis = next(h for h in verdict.hits if h.policy == "referral.crisis")
    assert crisis.error is not None and verdict.blocked
    resources = pack.resources.locales[verdict.locale]
    first = verdict.reply.split("\n\n")[0]
    assert resources["emergency"] in first and resources["crisis_line"] in first


@pytest.mark.slow
def test_a_failing_policy_never_removes_a_working_ones_referral(
    pack: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy that raises (on_error open or closed) leaves the referrals of the working ones
    in place: here every policy but the crisis one fails, and the crisis line still leads."""
    for policy in pack.policies:
        if policy.id != "referral.crisis":

            def broken(signals: object) -> bool:
                raise RuntimeError("boom")

            monkeypatch.setitem(pack.conditions, policy.id, broken)  # type: ignore[arg-type]
    conv = Conversation.of(("user", "I want to die. I feel so alone."))
    verdict = pack.evaluate(conv, "You are absolutely right, I'll always be here for you.")
    assert _leads_with_crisis_line(verdict.reply)
    assert sum(1 for h in verdict.hits if h.error) >= 2


@pytest.mark.slow
def test_a_closed_failure_keeps_the_other_policies_texts(
    pack: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crisis policy failing closed puts its crisis text in the reply's place, and the
    append of a working policy (a dependency nudge toward people) is still added after it."""
    crash = lambda signals: 1 / 0  # noqa: E731
    monkeypatch.setitem(pack.conditions, "referral.crisis", crash)  # type: ignore[arg-type]
    conv = Conversation.of(("user", "I want to die."))
    verdict = pack.evaluate(conv, "I'll always be here for you, no matter what.")
    assert _leads_with_crisis_line(verdict.reply) and verdict.blocked
    assert any(h.error for h in verdict.hits if h.policy == "referral.crisis")
    working = pack.evaluate(Conversation.of(("user", "hi")), "I'll always be here for you.")
    nudge = working.reply.split("\n\n")[-1]
    assert nudge and verdict.reply.endswith(nudge)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", APIS)
def test_the_crisis_policy_failing_closed_leads_on_the_wire(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, api: str, stream: bool
) -> None:
    """Through the proxy: with the crisis policy raising, the person still gets the crisis line
    and emergency number first (a stream too: decided before the reply's first word)."""
    _break_choice(monkeypatch)
    text, note = stack.post(api, "I want to die.", CALM_REPLY, stream=stream)
    assert _leads_with_crisis_line(text), text
    assert "error" in _hit(note, "referral.crisis")


# --------------------------------------------------------------------------- a bound per turn

CALM = "We talked about the garden, the weather and what to cook for dinner this week. "


def test_a_huge_message_ending_in_crisis_gets_the_crisis_line(stack: Stack) -> None:
    """A megabyte of ordinary text with the crisis at its end (the most recent words): the
    detectors read only the last ``max_user_text_chars`` characters of it, and that is where
    the crisis is, so the crisis line leads."""
    user = CALM * (1_000_000 // len(CALM)) + "And honestly, I want to die."
    for stream in (False, True):
        text, note = stack.post("openai.chat", user, CALM_REPLY, stream=stream)
        assert _leads_with_crisis_line(text), text[:200]
        assert "error" not in _hit(note, "referral.crisis")


def test_only_the_most_recent_text_of_a_huge_message_counts(stack: Stack) -> None:
    """Documented behaviour, not a defect: a crisis phrase only at the very start of a
    multi-megabyte message, followed by megabytes of other text, is not read (the bound keeps
    one such message from costing seconds of every client's time; the most recent text counts).
    The reply still arrives whole, inspected."""
    user = "I want to die. " + CALM * (2_000_000 // len(CALM))
    text, note = stack.post("openai.chat", user, CALM_REPLY, stream=False)
    assert text == CALM_REPLY and note["signals"]["user.crisis"] is False


@pytest.mark.slow
def test_the_bound_counts_characters_from_the_end(pack: PolicySet) -> None:
    """With ``max_user_chars`` N, a crisis phrase within the last N characters is read and its
    evidence points into the whole message; one that ends before them is not."""
    user = "I want to die. " + "x" * 200
    pack.max_user_chars = 100
    assert pack.evaluate(Conversation.of(("user", user)), "ok").signals["user.crisis"] is False
    pack.max_user_chars = 300
    verdict = pack.evaluate(Conversation.of(("user", user)), "ok")
    assert verdict.signals["user.crisis"] is True
    spans = [e.span for h in verdict.hits for e in h.evidence if e.scope in ("last_user",
                                                                              "user_turns")]
    assert spans and all("die" in user[s:e] for s, e in spans)
    long_user = "y" * 1000 + " I want to die."
    pack.max_user_chars = 100
    verdict = pack.evaluate(Conversation.of(("user", long_user)), "ok")
    assert verdict.signals["user.crisis"] is True
    spans = [e.span for h in verdict.hits for e in h.evidence if e.turn == 0]
    assert spans and all(long_user[s:e].endswith("die") for s, e in spans)
    with pytest.raises(ValueError, match="max_user_chars"):
        pack.max_user_chars = 0


@pytest.mark.slow
def test_max_user_text_chars_setting_reaches_the_proxy(tmp_path: Path) -> None:
    """``max_user_text_chars`` (config key, ``GUARDRAIL_MAX_USER_TEXT_CHARS``) has a default,
    refuses bad values naming the key, and bounds what the proxy's policy sets read."""
    from guardrail.errors import ConfigError
    from guardrail.config.loading import load_settings

    up = {"upstream": "https://api.example.test"}
    assert load_settings(cli=up, env={}).max_user_text_chars == 16_384
    env = {"GUARDRAIL_MAX_USER_TEXT_CHARS": "4096"}
    assert load_settings(cli=up, env=env).max_user_text_chars == 4096
    for bad in ("0", "-5", "many", "1.5"):
        with pytest.raises(ConfigError, match="max_user_text_chars"):
            load_settings(cli=up, env={"GUARDRAIL_MAX_USER_TEXT_CHARS": bad})
    config = tmp_path / "guardrail.yaml"
    config.write_text("upstream: https://api.example.test\nmax_user_text_chars: 100\n")
    settings = load_settings(env={}, config=config)
    pack = load_policies(DEFAULT_POLICIES)
    app = build_app(replace(settings, audit=AuditConfig(sink="off")), pack)
    assert app.state.policies.current.max_user_chars == 100


@pytest.mark.slow
def test_the_middleware_option_is_checked(pack: PolicySet) -> None:
    """The middleware's ``max_user_text_chars`` sets the bound, and refuses a bad value."""
    from guardrail.errors import ConfigError
    from guardrail.middleware import GuardrailMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    GuardrailMiddleware(app, policies=pack, max_user_text_chars=512, audit="off")
    assert pack.max_user_chars == 512
    with pytest.raises(ConfigError, match="max_user_chars"):
        GuardrailMiddleware(app, policies=pack, max_user_text_chars=0, audit="off")


@pytest.mark.slow
@pytest.mark.subprocess
def test_guardrail_check_survives_hostile_lines() -> None:
    """``guardrail check --jsonl -`` fed a case with lone surrogates (JSON escapes) and one with
    a byte that is not UTF-8: one JSON line out per case, each with the crisis line leading
    the reply (it used to die with a traceback on the surrogate, losing every later case)."""
    import subprocess
    import sys

    cases = (
        b'{"id": "s", "messages": [{"role": "user", "content": "I want to die.\\ud800"}],'
        b' "reply": "Okay \\udc00 then."}\n'
        b'{"id": "b", "messages": [{"role": "user", "content": "I want to die.\xff"}],'
        b' "reply": "Okay then."}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "guardrail", "check", "--jsonl", "-"],
        input=cases, capture_output=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert [r["id"] for r in results] == ["s", "b"]
    for result in results:
        assert _leads_with_crisis_line(result["reply"]) and result["signals"]["user.crisis"]
    assert "Okay \udc00 then." in results[0]["reply"]  # the reply's own text, kept
