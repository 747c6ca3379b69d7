"""Who and which session: keys from headers or the API's body field, HMAC'd, never raw."""

from __future__ import annotations

import hashlib
from dataclasses import astuple

import pytest

from guardrail.state import (
    Identity,
    Keyring,
    StateConfig,
    identify,
    state_header_names,
    strip_state_headers,
)

KEY = b"k" * 32
CONFIG = StateConfig(key=KEY, key_source="state.key")
RAW = "alice.distinctive-raw-id-7731@example.org"


def user_key(raw: str, key: bytes = KEY) -> str:
    return Keyring(key).user(raw)


def test_header_user_is_stored_as_its_hmac_never_raw() -> None:
    identity = identify({"x-guardrail-user": RAW}, None, None, CONFIG)
    assert identity is not None
    assert identity.user == user_key(RAW)
    assert len(identity.user) == 32 and int(identity.user, 16) >= 0
    assert RAW not in repr(identity) and all(RAW not in str(v) for v in astuple(identity))
    assert identity.user != hashlib.sha256(RAW.encode()).hexdigest()[:32]  # keyed, not bare
    assert identity.source == "header" and identity.session is None and not identity.minor


def test_another_key_gives_another_hash_and_the_same_key_the_same_on_every_replica() -> None:
    other = StateConfig(key=b"o" * 32)
    twin = StateConfig(key=KEY)
    a = identify({"x-guardrail-user": RAW}, None, None, CONFIG)
    b = identify({"x-guardrail-user": RAW}, None, None, other)
    c = identify({"x-guardrail-user": RAW}, None, None, twin)
    assert a is not None and b is not None and c is not None
    assert a.user != b.user and a.user == c.user


def test_header_names_are_matched_case_insensitively() -> None:
    identity = identify({"X-Guardrail-User": RAW, "X-GUARDRAIL-MINOR": "TRUE"}, {}, None, CONFIG)
    assert identity == Identity(user=user_key(RAW), minor=True)


@pytest.mark.parametrize(
    ("api", "body", "raw"),
    [
        ("openai.chat", {"user": "u-1"}, "u-1"),
        ("openai.chat", {"safety_identifier": "s-1", "user": "u-1"}, "s-1"),
        ("openai.responses", {"user": "u-2"}, "u-2"),
        ("openai.responses", {"safety_identifier": "s-2"}, "s-2"),
        ("anthropic.messages", {"metadata": {"user_id": "a-1"}}, "a-1"),
    ],
)
def test_body_fields_the_apis_define(api: str, body: dict[str, object], raw: str) -> None:
    identity = identify({}, body, api, CONFIG)
    assert identity is not None and identity.user == user_key(raw)
    assert identity.source == "body"


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("ollama.chat", {"user": "u-1"}),  # Ollama defines no user field
        ("anthropic.messages", {"user": "u-1"}),  # not Anthropic's field
        ("openai.chat", {"metadata": {"user_id": "a-1"}}),  # not OpenAI's field
        ("openai.chat", {"user": 12345}),
        ("openai.chat", {"user": ["list"]}),
        ("openai.chat", {"user": "   "}),
        ("anthropic.messages", {"metadata": "not-a-mapping"}),
        ("anthropic.messages", {"metadata": {"user_id": None}}),
        ("openai.chat", ["not", "a", "mapping"]),
        ("openai.chat", None),
        (None, {"user": "u-1"}),
    ],
)
def test_no_user_key_means_no_identity(api: str | None, body: object) -> None:
    headers = {"x-guardrail-session": "s", "x-guardrail-minor": "true"}
    assert identify(headers, body, api, CONFIG) is None


def test_the_header_wins_over_the_body_and_an_empty_header_falls_back() -> None:
    body = {"user": "from-body"}
    header = identify({"x-guardrail-user": "from-header"}, body, "openai.chat", CONFIG)
    empty = identify({"x-guardrail-user": "  "}, body, "openai.chat", CONFIG)
    assert header is not None and header.user == user_key("from-header")
    assert empty is not None and empty.user == user_key("from-body")


def test_session_key_is_bound_to_its_user_and_hashed_apart_from_user_keys() -> None:
    one = identify({"x-guardrail-user": "u1", "x-guardrail-session": "s"}, None, None, CONFIG)
    two = identify({"x-guardrail-user": "u2", "x-guardrail-session": "s"}, None, None, CONFIG)
    assert one is not None and two is not None
    assert one.session is not None and two.session is not None
    assert one.session != two.session  # the same raw session id of two users
    assert one.session != user_key("s") and "s" != one.session


@pytest.mark.parametrize(
    ("value", "minor"),
    [("true", True), ("1", True), ("Yes", True), ("on", True), ("false", False), ("0", False),
     ("maybe", False), ("", False)],
)
def test_minor_header(value: str, minor: bool) -> None:
    identity = identify({"x-guardrail-user": "u", "x-guardrail-minor": value}, None, None, CONFIG)
    assert identity is not None and identity.minor is minor


def test_a_minor_route_marks_every_user_and_a_header_cannot_unmark_them() -> None:
    headers = {"x-guardrail-user": "u", "x-guardrail-minor": "false"}
    identity = identify(headers, None, None, CONFIG, minor_route=True)
    assert identity is not None and identity.minor


def test_configured_header_names() -> None:
    config = StateConfig(
        key=KEY, user_header="x-uid", session_header="x-sid", minor_header="x-kid"
    )
    headers = {"x-uid": "u", "x-sid": "s", "x-kid": "true", "x-guardrail-user": "ignored"}
    identity = identify(headers, None, None, config)
    assert identity is not None and identity.user == user_key("u") and identity.minor
    assert identify({"x-guardrail-user": "u"}, None, None, config) is None


def test_the_state_headers_are_stripped_in_any_case_and_nothing_else() -> None:
    raw = [
        (b"X-Guardrail-User", b"u"),
        (b"x-guardrail-session", b"s"),
        (b"X-GUARDRAIL-MINOR", b"true"),
        (b"authorization", b"Bearer t"),
        (b"content-type", b"application/json"),
    ]
    assert strip_state_headers(raw, CONFIG) == raw[3:]
    assert set(state_header_names(CONFIG)) == {
        b"x-guardrail-user",
        b"x-guardrail-session",
        b"x-guardrail-minor",
    }


def test_the_keyring_refuses_a_short_key_and_never_shows_its_key() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Keyring(b"short")
    assert "k" * 16 not in repr(Keyring(KEY))
    assert "k" * 16 not in repr(CONFIG)
