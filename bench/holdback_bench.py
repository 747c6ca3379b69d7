"""CPU of the sentence holdback on hostile streamed replies (issue 11, defect 6).

    python -m bench.holdback_bench [--mb 10] [--policies policies]

Streams one OpenAI Chat Completions reply of ``--mb`` megabytes through a ``StreamGuard`` in
this process (holdback ``sentence``, the default pack, upstream bytes fed in 64 KiB reads) and
prints the CPU seconds (``time.process_time``) for each shape of text: no space at all, one
delta or 1,000-character deltas; a run of dots; words without a sentence end; ordinary
sentences. Linear work means every shape costs about the same per megabyte; the issue measured
224 s of CPU for 10 MB without a space (one delta) against 2 s for 10 MB of words.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from bench.procs import REPO
from guardrail.policy import Conversation, load_policies
from guardrail.guard.stream import StreamGuard

__all__ = ["main", "stream_cpu"]

MB = 1 << 20
READ = 64 * 1024
USER = Conversation.of(("user", "I feel hopeless tonight"))


def chat_stream(text: str, piece: int) -> bytes:
    """A Chat Completions stream of ``text`` in deltas of ``piece`` characters (ASCII only)."""
    head = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    role = b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    out = [head + role]
    for at in range(0, len(text), piece):
        delta = text[at : at + piece].encode()
        out.append(
            head + b'[{"index":0,"delta":{"content":"' + delta + b'"},"finish_reason":null}]}\n\n'
        )
    out.append(head + b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    return b"".join(out)


def stream_cpu(body: bytes, policies_path: Path) -> float:
    """CPU seconds to guard ``body`` (a whole upstream stream) fed in 64 KiB reads."""
    guard = StreamGuard("openai.chat", load_policies(policies_path), USER)
    started = time.process_time()
    for at in range(0, len(body), READ):
        guard.feed(body[at : at + READ])
    guard.close()
    return time.process_time() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--policies", type=Path, default=REPO / "policies")
    args = parser.parse_args(argv)
    size = int(args.mb * MB)
    sentence = "Tea is warm and the evening is quiet. "
    shapes = [
        ("no space, one delta", "x" * size, size),
        ("no space, 1,000-char deltas", "x" * size, 1000),
        ("dots only, 1,000-char deltas", "." * size, 1000),
        ("words, no sentence end, 1,000-char deltas", ("word " * (size // 5 + 1))[:size], 1000),
        ("sentences, 1,000-char deltas", (sentence * (size // len(sentence) + 1))[:size], 1000),
    ]
    print(f"| reply ({args.mb:g} MB) | CPU s |\n|---|---|")
    for name, text, piece in shapes:
        print(f"| {name} | {stream_cpu(chat_stream(text, piece), args.policies):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
