"""Packs compose, through the proxy (issue 13, item 2): ``policies: [default, ./mine]`` in a config
file, requests over HTTP into the app, and reload of a list whose second source breaks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest
from tests.kit.proxyapp import reply
from tests.kit.wire import chat_request, completion

from guardrail.proxy.admin import build_admin_app
from guardrail.proxy.app import build_app
from guardrail.errors import ConfigError
from guardrail.observe.record import Recorder
from guardrail.policy import Conversation, load_policies
from guardrail.policy.sources import DEFAULT_PACK
from guardrail.proxy.reload import Reloader
from guardrail.config.loading import load_settings

MINE = """\
    detectors:
      reply.clinic_hours:
        scope: reply
        phrases: ["clinic hours"]
    policies:
      - id: clinic.night_line
        category: clinic
        description: A distressed person asking when the clinic opens also gets the crisis line.
        severity: medium
        condition: user.distress and reply.clinic_hours
        actions:
          - append: {text: "Before then, {crisis_line} is there: {crisis_contact}."}
    overrides:
      policies:
        referral.distress: {mode: shadow}
        validation.pure: {enabled: false}
      resources:
        locales:
          en-GB:
            crisis_line: Shout
            crisis_contact: text SHOUT to 85258
            source: https://giveusashout.org/
    """
TOKEN = "admin-token-0123456789"


def setup(tmp_path: Path, text: str = MINE) -> Path:
    """A config folder: guardrail.yaml naming [default, ./mine], and mine/ beside it."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "clinic.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    config = tmp_path / "guardrail.yaml"
    config.write_text(
        "upstream: https://upstream.test\npolicies: [default, ./mine]\naudit: {sink: \"off\"}\n"
    )
    return config


def upstream(text: str) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: reply(body=completion(text)))


async def post(app: object, body: object, locale: str | None = None) -> dict[str, object]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"x-guardrail-locale": locale} if locale else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
        res = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert res.status_code == 200, res.text
    out: dict[str, object] = res.json()
    return out


def content(out: dict[str, object]) -> str:
    choices = out["choices"]
    assert isinstance(choices, list)
    return str(choices[0]["message"]["content"])


def test_the_config_list_resolves_default_and_paths_beside_the_config(tmp_path: Path) -> None:
    config = setup(tmp_path)
    settings = load_settings(env={}, config=config)
    assert settings.policies == (DEFAULT_PACK, tmp_path / "mine")
    assert settings.routes[0].policies is None  # the catch-all route shares the main set
    env = load_settings(env={"GUARDRAIL_UPSTREAM": "https://u.test",
                             "GUARDRAIL_POLICIES": f"default,{tmp_path / 'mine'}"})
    assert env.policies == (DEFAULT_PACK, tmp_path / "mine")
    flags = load_settings(cli={"upstream": "https://u.test",
                               "policies": ["default", str(tmp_path / "mine")]}, env={})
    assert flags.policies == env.policies
    single = load_settings(cli={"upstream": "https://u.test", "policies": "default"}, env={})
    assert single.policies == DEFAULT_PACK  # one source: a plain path, as before
    routed = tmp_path / "routed.yaml"
    routed.write_text(
        "upstream: https://u.test\nroutes:\n  - prefix: /strict\n    policies: [default, ./mine]\n"
    )
    [strict] = [r for r in load_settings(env={}, config=routed).routes if r.prefix == "/strict"]
    assert strict.policies == (DEFAULT_PACK, tmp_path / "mine")


@pytest.mark.parametrize(
    ("where", "value", "source"),
    [
        ("config", "policies: [default, default]\n", "config file"),
        ("config", "policies: []\n", "config file"),
        ("config", "policies: [default, {a: 1}]\n", "config file"),
        ("env", "default,,x", "environment GUARDRAIL_POLICIES"),
    ],
)
def test_a_bad_policies_value_names_the_key_and_where_it_came_from(
    tmp_path: Path, where: str, value: str, source: str
) -> None:
    config = tmp_path / "g.yaml"
    config.write_text("upstream: https://u.test\n" + (value if where == "config" else ""))
    env = {"GUARDRAIL_POLICIES": value} if where == "env" else {}
    with pytest.raises(ConfigError, match=rf"{source}.*policies: ") as info:
        load_settings(env=env, config=config)
    if where == "config":
        assert f"{config}:2" in str(info.value)


@pytest.mark.anyio
async def test_the_proxy_serves_the_composed_set(tmp_path: Path) -> None:
    settings = load_settings(env={}, config=setup(tmp_path))
    app = build_app(settings, load_policies(settings.policies),
                    transport=upstream("Our clinic hours are 9 to 5."))
    distressed = chat_request("I feel so hopeless and alone lately.")
    gb = await post(app, distressed, locale="en-GB")
    assert content(gb) == (
        "Our clinic hours are 9 to 5.\n\nBefore then, Shout is there: text SHOUT to 85258."
    )
    hits = {h["policy"]: h for h in gb["guardrail"]["hits"]}  # type: ignore[index]
    assert hits["clinic.night_line"]["mode"] == "enforce"
    assert hits["referral.distress"]["mode"] == "shadow"  # evaluated and reported, no nudge
    us = await post(app, distressed)
    assert content(us).endswith("the 988 Suicide & Crisis Lifeline is there: call or text 988 "
                                "any time, or chat at 988lifeline.org.")
    praise = build_app(settings, load_policies(settings.policies),
                       transport=upstream("That's a brilliant idea! You should absolutely do it."))
    out = await post(praise, chat_request("What do you think of my plan to quit and travel?"))
    assert content(out) == "That's a brilliant idea! You should absolutely do it."
    assert "validation.pure" not in json.dumps(out["guardrail"])  # turned off: never runs
    loaded = app.state.policies.current
    assert "validation.pure" not in [p.id for p in loaded.policies]


@pytest.mark.anyio
async def test_reload_refuses_a_bad_second_source_and_keeps_the_last_good_set(
    tmp_path: Path,
) -> None:
    config = setup(tmp_path)
    settings = load_settings(env={}, config=config)
    app = build_app(settings, load_policies(settings.policies),
                    transport=upstream("Our clinic hours are 9 to 5."))
    sets = app.state.policy_sets
    reloader = Reloader(app.state.policies, settings.policies,
                        on_install=sets.installer(Recorder([("/", "openai.chat")]).install),
                        load=sets.load)
    transport = httpx.ASGITransport(app=build_admin_app(app.state.policies, reloader, token=TOKEN))
    auth = {"authorization": f"Bearer {TOKEN}"}
    distressed = chat_request("I feel so hopeless and alone lately.")
    before = content(await post(app, distressed, locale="en-GB"))
    good = app.state.policies.current
    mine = tmp_path / "mine" / "clinic.yaml"
    mine.write_text(mine.read_text().replace("user.distress and", "user.distres and"))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as admin:
        refused = await admin.post("/-/reload", headers=auth)
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["file"] == str(mine) and error["policy_id"] == "clinic.night_line"
        lines = mine.read_text().splitlines()
        assert lines[error["line"] - 1].strip() == "condition: user.distres and reply.clinic_hours"
        assert "user.distres" in error["message"]
        assert app.state.policies.current is good
        assert content(await post(app, distressed, locale="en-GB")) == before  # still served
        mine.write_text(textwrap.dedent(MINE).replace("Before then", "Until we open"))
        ok = await admin.post("/-/reload", headers=auth)
        assert ok.status_code == 200 and ok.json()["changed"] is True
    after = content(await post(app, distressed, locale="en-GB"))
    assert after.endswith("Until we open, Shout is there: text SHOUT to 85258.")


@pytest.mark.anyio
async def test_the_watcher_reloads_when_the_second_source_changes(tmp_path: Path) -> None:
    """The watcher looks at every source of the list; its clock is a channel the test ticks."""
    import anyio

    from guardrail.proxy.reload import PolicyHolder, watch

    settings = load_settings(env={}, config=setup(tmp_path))
    holder = PolicyHolder(load_policies(settings.policies))
    reloader = Reloader(holder, settings.policies)
    send, receive = anyio.create_memory_object_stream[None]()

    async def tick(_: float) -> None:
        await receive.receive()

    first = holder.current
    mine = tmp_path / "mine" / "clinic.yaml"
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: watch(reloader, 2.0, sleep=tick))
        await send.send(None)  # the watcher has its first look
        mine.write_text(textwrap.dedent(MINE).replace("Before then", "Until we open"))
        await send.send(None)  # it sees the change
        await send.send(None)  # which held still: it reloads
        await send.send(None)  # and is back to waiting
        tasks.cancel_scope.cancel()
    assert holder.current is not first and holder.current.digest != first.digest
    verdict = holder.current.evaluate(
        Conversation.of(("user", "I feel so hopeless and alone lately.")),
        "Our clinic hours are 9 to 5.",
        locale="en-GB",
    )
    assert verdict.reply.endswith("Until we open, Shout is there: text SHOUT to 85258.")
