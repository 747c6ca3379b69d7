"""Routes: the ``routes:`` key, prefix matching and stripping, per-route upstreams, API
recognition from the path, and per-route policy sets that reload with the main one."""

from __future__ import annotations

import functools

import json
import shutil
from pathlib import Path

import httpx
import pytest

from guardrail.proxy.app import build_app
from guardrail.config.values import API_NAMES
from guardrail.errors import ConfigError
from guardrail.guard.inspection import APIS, detect_api
from guardrail.observe.metrics import REGISTRY
from guardrail.observe.record import Recorder
from guardrail.policy import PolicySet, load_policies
from guardrail.proxy.reload import Reloader
from guardrail.config.routes import NoRoute, Route, RouteTable, parse_routes
from guardrail.config.loading import load_settings
from guardrail.config.settings import Settings

from tests.kit.paths import PROXY_FIXTURES
from tests.kit.proxyapp import reply
from tests.kit.wire import chat_request, completion

STRICT = """
detectors:
  reply.tea: {scope: reply, phrases: [tea]}
policies:
  - id: strict.tea
    category: containment
    description: withholds replies about tea
    severity: critical
    condition: reply.tea
    actions: [{block: {text: "STRICT: withheld."}}]
"""


def table(*prefixes: str) -> RouteTable:
    return RouteTable([Route(p, f"https://{p.strip('/') or 'root'}.test") for p in prefixes])


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("path", "prefix", "rest"),
    [
        (b"/v1/chat/completions", "/", b"/v1/chat/completions"),
        (b"/openai/v1/chat/completions", "/openai", b"/v1/chat/completions"),
        (b"/OpenAI/v1/models", "/openai", b"/v1/models"),
        (b"/%6Fpenai/v1/models", "/openai", b"/v1/models"),
        (b"/openai", "/openai", b"/"),
        (b"/openai/", "/openai", b"/"),
        (b"/openaix/v1", "/", b"/openaix/v1"),
        (b"/openai/eu/v1/messages", "/openai/eu", b"/v1/messages"),
        (b"/openai//v1/models", "/openai", b"/v1/models"),
    ],
)
def test_longest_whole_segment_prefix_wins_and_is_stripped(
    path: bytes, prefix: str, rest: bytes
) -> None:
    route, left = table("/", "/openai", "/openai/eu").match(path)
    assert (route.prefix, left) == (prefix, rest)


def test_no_route_without_a_catch_all() -> None:
    with pytest.raises(NoRoute):
        table("/openai").match(b"/anthropic/v1/messages")


@pytest.mark.parametrize(
    ("method", "path", "api"),
    [
        ("POST", b"/v1/chat/completions", "openai.chat"),
        ("POST", b"/openai/deployments/x/chat/completions/", "openai.chat"),
        ("POST", b"/v1/Chat/%63ompletions", "openai.chat"),
        ("POST", b"/v1/responses", "openai.responses"),
        ("POST", b"/v1/messages", "anthropic.messages"),
        ("POST", b"/v1/messages;x=1", "anthropic.messages"),
        ("POST", b"/api/chat", "ollama.chat"),
        ("POST", b"/ollama/api/chat", "ollama.chat"),
        ("GET", b"/v1/responses", None),
        ("POST", b"/v1/responses/resp_1/cancel", None),
        ("POST", b"/v1/messages/count_tokens", None),
        ("POST", b"/v1/threads/thread_1/messages", None),  # Assistants: not a chat reply
        ("POST", b"/v1/embeddings", None),
        ("POST", b"/api/generate", None),
    ],
)
def test_the_api_is_recognised_from_the_path(method: str, path: bytes, api: str | None) -> None:
    assert detect_api(method, path) == api


def test_the_api_names_of_settings_and_inspect_agree() -> None:
    assert API_NAMES == APIS


# --------------------------------------------------------------------------- configuration


def test_routes_from_the_config_file_inherit_the_top_level_keys(tmp_path: Path) -> None:
    config = tmp_path / "guardrail.yaml"
    config.write_text(
        "upstream: https://api.openai.com\nholdback: none\nlocale: en-IE\nstall_timeout: 30\n"
        "routes:\n"
        "  - {prefix: /anthropic/, upstream: 'https://api.anthropic.com', holdback: full}\n"
        "  - {prefix: /local, upstream: 'http://127.0.0.1:11434', policies: strict,\n"
        "     stall_timeout: off, api: ollama.chat, max_holdback_chars: 200}\n"
    )
    s = load_settings(config=config, env={})
    by_prefix = {r.prefix: r for r in s.routes}
    assert [r.prefix for r in s.routes] == ["/anthropic", "/local", "/"]
    assert by_prefix["/anthropic"] == Route(
        "/anthropic", "https://api.anthropic.com", "auto", None, "en-IE", "full", 1000, 30.0
    )
    assert by_prefix["/local"] == Route(
        "/local", "http://127.0.0.1:11434", "ollama.chat", tmp_path / "strict", "en-IE", "none",
        200, None,
    )
    assert by_prefix["/"].upstream == "https://api.openai.com"


def test_routes_from_the_environment_and_without_a_catch_all() -> None:
    env = {"GUARDRAIL_ROUTES": "[{prefix: /a, upstream: 'https://a.test'}]"}
    s = load_settings(env=env)
    assert [(r.prefix, r.upstream) for r in s.routes] == [("/a", "https://a.test")]
    assert s.upstream is None


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([{"prefix": "/a", "upstreams": "https://a.test"}], "routes[0].upstreams: unknown key"),
        ([{"upstream": "https://a.test"}], "routes[0].prefix: missing"),
        ([{"prefix": "a"}], "routes[0].prefix: must be a path"),
        ([{"prefix": "/a/../b"}], "routes[0].prefix: must not have"),
        ([{"prefix": "/a"}, {"prefix": "/A/"}], "routes[1].prefix: '/A' repeats routes[0]"),
        ([{"prefix": "/a", "holdback": "some"}], "routes[0].holdback: must be one of"),
        ([{"prefix": "/a", "api": "gemini"}], "routes[0].api: must be one of"),
        ([{"prefix": "/a", "upstream": "ftp://a.test"}], "routes[0].upstream: must be an http"),
        ("nope", "must be a list"),
    ],
)
def test_bad_routes_name_the_entry_and_key(routes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_routes(routes)


def test_a_route_without_an_upstream_needs_the_top_level_one(tmp_path: Path) -> None:
    config = tmp_path / "guardrail.yaml"
    config.write_text("routes:\n  - prefix: /a\n")
    with pytest.raises(ConfigError, match=r"guardrail.yaml:1: routes\[0\].upstream: missing"):
        load_settings(config=config, env={})


# --------------------------------------------------------------------------- through the proxy


def routed_settings(strict: Path | None = None) -> Settings:
    specs = parse_routes([
        {"prefix": "/anthropic", "upstream": "https://anthropic.test"},
        {"prefix": "/vertex", "upstream": "https://vertex.test/v1/projects/p",
         "api": "anthropic.messages"},
        *([{"prefix": "/strict", "policies": str(strict)}] if strict else []),
    ])
    return Settings(upstream="https://openai.test", policies=PROXY_FIXTURES / "policies",
                    route_specs=specs)


def answer(request: httpx.Request) -> httpx.Response:
    text = "Sure. I will always be here. Bye."
    if request.url.host == "openai.test":
        return reply(body=completion(text))
    message = {"id": "m", "type": "message", "role": "assistant", "model": "c",
               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
    return reply(body=message)


async def call(app: object, path: str, body: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
        return await client.post(path, json=body)


@pytest.mark.anyio
async def test_each_route_reaches_its_upstream_with_the_prefix_stripped(
    fixture_policies: PolicySet,
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    app = build_app(routed_settings(), fixture_policies, transport=httpx.MockTransport(handler))
    anthropic_body = {"model": "c", "max_tokens": 9, "system": "be kind",
                      "messages": [{"role": "user", "content": "Will you stay?"}]}
    response = await call(app, "/anthropic/v1/messages", anthropic_body)
    assert str(seen[-1].url) == "https://anthropic.test/v1/messages"
    assert response.headers["x-guardrail-inspected"] == "true"
    body = response.json()
    assert body["content"][0]["text"].startswith("Sure. I'm glad to talk now")
    assert body["guardrail"]["hits"][0]["policy"] == "dependency.always"
    # a non-standard path on a route that pins its API: inspected as that API
    response = await call(app, "/vertex/publishers/anthropic/models/c:rawPredict", anthropic_body)
    assert seen[-1].url.path == "/v1/projects/p/publishers/anthropic/models/c:rawPredict"
    assert response.json()["guardrail"]["inspected"] is True
    # the catch-all route, and a path that is no chat endpoint: passed through, not annotated
    response = await call(app, "/v1/chat/completions", chat_request("Will you stay?"))
    assert str(seen[-1].url) == "https://openai.test/v1/chat/completions"
    assert response.json()["guardrail"]["inspected"] is True
    response = await call(app, "/anthropic/v1/complete", {"prompt": "x"})
    assert "x-guardrail-inspected" not in response.headers


@pytest.mark.anyio
async def test_no_route_is_a_404_and_nothing_is_forwarded(fixture_policies: PolicySet) -> None:
    seen: list[httpx.Request] = []
    settings = Settings(route_specs=parse_routes([{"prefix": "/a", "upstream": "https://a.test"}]))
    app = build_app(settings, fixture_policies,
                    transport=httpx.MockTransport(lambda r: seen.append(r) or answer(r)))
    response = await call(app, "/b/v1/chat/completions", chat_request("hi"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_route"
    assert seen == []


@pytest.mark.anyio
async def test_route_metrics_are_labelled_by_prefix(fixture_policies: PolicySet) -> None:
    def count() -> float:
        labels = {"route": "/anthropic", "api": "anthropic.messages", "outcome": "rewritten"}
        return REGISTRY.get_sample_value("guardrail_requests_total", labels) or 0.0

    def in_flight(route: str) -> float:
        return REGISTRY.get_sample_value("guardrail_requests_in_flight", {"route": route}) or 0.0

    app = build_app(routed_settings(), fixture_policies, transport=httpx.MockTransport(answer))
    before, busy = count(), (in_flight("/"), in_flight("/anthropic"))
    body = {"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    await call(app, "/anthropic/v1/messages", body)
    assert count() == before + 1
    assert (in_flight("/"), in_flight("/anthropic")) == busy  # up and down on the same route


# --------------------------------------------------------------------------- reload


@pytest.mark.anyio
async def test_a_route_set_reloads_with_the_main_one_and_is_refused_with_it(
    tmp_path: Path, fixture_policies: PolicySet
) -> None:
    main, strict = tmp_path / "main", tmp_path / "strict"
    shutil.copytree(PROXY_FIXTURES / "policies", main)
    strict.mkdir()
    (strict / "strict.yaml").write_text(STRICT)
    shutil.copy(PROXY_FIXTURES / "policies" / "resources.yaml", strict / "resources.yaml")
    settings = routed_settings(strict)
    settings = Settings(**{**vars(settings), "policies": main})
    app = build_app(settings, load_policies(main), transport=httpx.MockTransport(answer))
    sets = app.state.policy_sets
    reloader = Reloader(app.state.policies, main, on_install=sets.installer(
        Recorder([("/", "openai.chat")]).install), load=sets.load)
    before = await call(app, "/strict/v1/chat/completions", chat_request("hi"))
    assert before.json()["choices"][0]["message"]["content"].startswith("Sure.")
    (strict / "strict.yaml").write_text(STRICT.replace("[tea]", "[sure]"))
    old_main = app.state.policies.current
    (main / "zz.yaml").write_text("policies: [{id: broken}]\n")  # the main set breaks
    assert not reloader.reload("admin").ok
    assert app.state.policies.current is old_main
    after = await call(app, "/strict/v1/chat/completions", chat_request("hi"))
    assert after.json() == before.json() | {"guardrail": after.json()["guardrail"]}  # kept
    (main / "zz.yaml").unlink()
    assert reloader.reload("admin").ok
    after = await call(app, "/strict/v1/chat/completions", chat_request("hi"))
    assert after.json()["choices"][0]["message"]["content"] == "STRICT: withheld."
    main_reply = await call(app, "/v1/chat/completions", chat_request("hi"))
    assert "STRICT" not in json.dumps(main_reply.json())


@pytest.mark.anyio
async def test_the_watcher_reloads_when_a_route_set_changes(tmp_path: Path) -> None:
    import anyio

    from guardrail.proxy.reload import watch

    main, strict = tmp_path / "main", tmp_path / "strict"
    shutil.copytree(PROXY_FIXTURES / "policies", main)
    strict.mkdir()
    (strict / "strict.yaml").write_text(STRICT)
    shutil.copy(PROXY_FIXTURES / "policies" / "resources.yaml", strict / "resources.yaml")
    settings = Settings(**{**vars(routed_settings(strict)), "policies": main})
    app = build_app(settings, load_policies(main), transport=httpx.MockTransport(answer))
    sets = app.state.policy_sets
    reloader = Reloader(app.state.policies, main, on_install=sets.installer(lambda p: None),
                        load=sets.load)
    before = sets.own[strict].current
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(functools.partial(watch, reloader, 0.05, sources=sets.sources))
        await anyio.sleep(0.1)
        (strict / "strict.yaml").write_text(STRICT.replace("[tea]", "[sure]"))
        with anyio.fail_after(5):
            while sets.own[strict].current is before:
                await anyio.sleep(0.02)
        tasks.cancel_scope.cancel()
    assert sets.own[strict].current.digest != before.digest
