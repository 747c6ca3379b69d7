"""The ``guardrail`` command line: ``serve``, ``test``, ``check``, ``state``, ``protocol`` and
``report``.

This module only parses arguments and dispatches; each command lives in its own module beside it (``guardrail/cli/*.py``).
Every command returns a process exit status: 0 on success, 1 when the checked thing failed
(a policy test, a check run), 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from guardrail.version import __version__
from guardrail.errors import GuardrailError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardrail",
        description="Conversation-guardrail proxy and policy tools for supportive chatbots.",
    )
    parser.add_argument("--version", action="version", version=f"guardrail {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from guardrail.cli import check, policytest, protocol, report, serve, state, supervisor

    serving = sub.add_parser("serve", help="run the guardrail proxy", description=serve.__doc__)
    serve.add_arguments(serving)
    serving.set_defaults(run=supervisor.run)  # one process, or a supervisor and its workers
    policytest.add_arguments(
        sub.add_parser("test", help="run every policy's inline tests", description=policytest.__doc__)
    )
    check.add_arguments(
        sub.add_parser("check", help="evaluate JSONL cases offline", description=check.__doc__)
    )
    state.add_arguments(
        sub.add_parser("state", help="act on the per-user state store", description=state.__doc__)
    )
    protocol.add_arguments(
        sub.add_parser(
            "protocol",
            help="render the policy set as a readable crisis protocol",
            description=protocol.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    report.add_arguments(
        sub.add_parser("report", help="reports from the audit trail", description=report.__doc__)
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except GuardrailError as exc:
        print(f"guardrail {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status
