"""Regenerate: ask the upstream once more when a policy requests it, within a time budget.

When a whole (non-streamed) reply's verdicts carry ``regenerate`` requests (policies with a
``regenerate`` key that hit) and the route has ``regenerate`` on, :func:`regenerate` sends the
original request again to the same upstream URL with the same headers, plus the requesting
policies' corrective instruction (placed per API by the format module's ``with_instruction``:
a system message after the leading ones for OpenAI chat and Ollama, appended to ``system`` for
Anthropic Messages and to ``instructions`` for Responses).

The second reply is judged against the ORIGINAL conversation (the instruction's own words never
trigger a detector) and in the same locale. It is accepted when it was read within
``regenerate_budget`` seconds without an upstream error, is not blocked, and none of the
requesting policies hits it again; then it is sent (with any template action of other policies
applied). Otherwise the first reply's template fallback (``Verdict.reply``) is sent. Never more
than one extra call per request.

Either way the ``guardrail`` body object says what happened::

    "regenerated": true | false,
    "regenerate": {"policies": ["validation.only"], "outcome": "accepted"}

``outcome`` is one of :data:`OUTCOMES`. Streams are regenerated only with holdback ``full``
(``guardrail.proxy.regenerate_stream``, built on :func:`prepare` and :func:`open_second`); with
``sentence`` or ``none`` their text is already out, so they keep the template fallback. Nothing
here logs: the caller records ``Attempt.result`` (log line, ``guardrail_regenerations_total``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from guardrail.formats.codings import decode_body
from guardrail.errors import UpstreamError
from guardrail.formats import ChatRequest, jsontext
from guardrail.guard.offload import offloaded
from guardrail.guard.inspection import FORMATS, Headers, Outcome, PolicyEngine, inspect_body
from guardrail.policy import Verdict
from guardrail.proxy.upstream import read_capped, send

__all__ = [
    "OUTCOMES",
    "Attempt",
    "Second",
    "annotated",
    "note_for",
    "open_second",
    "prepare",
    "regenerate",
    "requested",
    "second_body",
]

OUTCOMES = ("accepted", "rejected", "timeout", "upstream-error")
"""How a regeneration ended: the second reply sent, or the fallback sent because the second
reply failed the policies again, the budget ran out, or the upstream failed."""

_BODY_HEADERS = frozenset({b"content-length", b"content-encoding", b"transfer-encoding"})


@dataclass(frozen=True)
class Second:
    """Everything needed to send a chat request once more: where, how, and what was asked."""

    client: httpx.AsyncClient
    url: httpx.URL
    headers: Headers
    api: str
    body: bytes  # the client's request body as received
    encoding: str  # its Content-Encoding
    chat: ChatRequest
    policies: PolicyEngine
    locale: str
    limit: int  # max_inspect_bytes
    budget: float  # seconds for the second call, reply read


@dataclass(frozen=True)
class Attempt:
    """The result of one regeneration: the outcome to send and record, how it ended, which
    policies asked, and the seconds the second upstream call took."""

    outcome: Outcome
    result: str
    policies: tuple[str, ...]
    upstream_s: float


def requested(verdicts: Sequence[Verdict | None]) -> tuple[tuple[str, ...], str]:
    """The ids of the policies that request a regeneration, and their instructions as one text
    (each once, in verdict and hit order); ``((), "")`` when none asks."""
    ids: list[str] = []
    texts: list[str] = []
    for verdict in verdicts:
        if verdict is None:
            continue
        for request in verdict.regenerate:
            if request.policy not in ids:
                ids.append(request.policy)
            if request.instruction not in texts:
                texts.append(request.instruction)
    return tuple(ids), "\n\n".join(texts)


def second_body(api: str, body: object, instruction: str) -> bytes:
    """The second request's body: ``body`` (the parsed first request) with ``instruction``
    placed where API ``api`` reads operator instructions. Raises FormatError."""
    new = FORMATS[api].with_instruction(body, instruction)
    return jsontext.dumps(new)


def prepare(second: Second, verdicts: Sequence[Verdict | None]) -> tuple[tuple[str, ...], bytes]:
    """The ids of the policies asking to regenerate and the second request's body, or ``((),
    b"")`` when none asks or the request cannot be rebuilt (then the first reply stands)."""
    ids, instruction = requested(verdicts)
    if not ids:
        return (), b""
    try:
        body = json.loads(decode_body(second.body, second.encoding, second.limit))
        return ids, second_body(second.api, body, instruction)
    except (ValueError, RecursionError):  # JSON, Undecodable, TooLarge, FormatError
        return (), b""


async def open_second(second: Second, content: bytes) -> httpx.Response:
    """Send the second request (body ``content``) where the first went, with its headers; the
    response's body is not read yet (the caller closes it). Raises UpstreamError."""
    headers = [(n, v) for n, v in second.headers if n not in _BODY_HEADERS]
    return await send(second.client, "POST", second.url, headers, content)


def note_for(ids: Sequence[str], result: str, regenerated: bool) -> dict[str, Any]:
    """The annotation's ``regenerated`` and ``regenerate`` keys."""
    return {"regenerated": regenerated, "regenerate": {"policies": list(ids), "outcome": result}}


def annotated(outcome: Outcome, note: dict[str, Any]) -> Outcome:
    """``outcome`` with ``note`` merged into its body's ``guardrail`` object."""
    if outcome.body is None:
        return outcome
    body = json.loads(outcome.body)
    body["guardrail"] = {**body.get("guardrail", {}), **note}
    raw = jsontext.dumps(body)
    return dataclasses.replace(outcome, body=raw)


async def regenerate(second: Second, first: Outcome) -> Attempt | None:
    """Ask once more if ``first`` (an inspected whole reply) has regenerate requests; None when
    it has none or the request cannot be rebuilt (then send ``first`` as it is)."""
    if not first.inspected or first.body is None:
        return None
    ids, content = prepare(second, first.verdicts)
    if not ids:
        return None
    started = time.perf_counter()
    result, outcome = "timeout", None
    with anyio.move_on_after(second.budget):
        result, outcome = await _ask(second, content, ids)
    spent = time.perf_counter() - started
    chosen = outcome if result == "accepted" and outcome is not None else first
    sent = annotated(chosen, note_for(ids, result, chosen is not first))
    return Attempt(sent, result, ids, spent)


async def _ask(second: Second, content: bytes, ids: tuple[str, ...]) -> tuple[str, Outcome | None]:
    try:
        response = await open_second(second, content)
        try:
            if not 200 <= response.status_code < 300:
                return "upstream-error", None
            read, complete = await read_capped(response.aiter_raw(), second.limit)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
    except UpstreamError:
        return "upstream-error", None
    if not complete:
        return "upstream-error", None
    raw = b"".join(read)
    run = functools.partial(
        inspect_body,
        second.api,
        second.chat,  # the ORIGINAL conversation: the instruction is not judged
        raw,
        response.headers.get("content-encoding", ""),
        second.policies,
        second.locale,
        second.limit,
    )
    weight = len(raw) + len(second.body)  # the reply is judged against the whole conversation
    outcome = await anyio.to_thread.run_sync(run) if offloaded(weight) else run()
    if not outcome.inspected:
        return ("rejected" if outcome.reason == "engine-error" else "upstream-error"), None
    if outcome.blocked or set(outcome.policies) & set(ids):
        return "rejected", outcome
    return "accepted", outcome
