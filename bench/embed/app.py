"""The app under test: a Starlette chat route answering ~1 KB Chat Completions replies.

    python -m bench.embed.app --port 8800 [--guard] [--policies policies/]

Without ``--guard`` it is the bare app; with it, the same app with ``GuardrailMiddleware`` and
the default pack (defaults otherwise, as a user would add it). Replies cycle through
``bench.texts`` (the proxy benchmark's scripted replies, about half of them tripping the pack),
padded to ~1 KB, so both targets do the same work apart from the middleware.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.texts import REPLIES, synthetic_reply

REPO = Path(__file__).resolve().parents[2]
REPLY_BYTES = 1024


def completion(text: str) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 200, "total_tokens": 250},
    }
    return json.dumps(body).encode("utf-8")


def build(guard: bool, policies: Path) -> Starlette:
    """The chat app, with the middleware when ``guard``."""
    replies = [completion(synthetic_reply(REPLY_BYTES, seed)) for seed in range(len(REPLIES))]
    turn = itertools.count()

    async def chat(request: Request) -> Response:
        await request.body()  # a real app reads its request
        return Response(replies[next(turn) % len(replies)], media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    if guard:
        from guardrail import GuardrailMiddleware, load_policies

        app.add_middleware(GuardrailMiddleware, policies=load_policies(policies))
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--guard", action="store_true", help="add GuardrailMiddleware")
    parser.add_argument("--policies", type=Path, default=REPO / "policies")
    args = parser.parse_args(argv)
    app = build(args.guard, args.policies)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
