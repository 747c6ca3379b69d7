"""Act on the per-user state store: ``guardrail state erase --user ID``.

Uses the store and the HMAC key of the configuration (``--config``, ``GUARDRAIL_*``), so the raw
user id given here is hashed exactly as the proxy hashes it in requests. Only a shared store
(``state.backend: redis``) can be reached from another process; the memory backend lives inside
the serving process, whose admin endpoint ``DELETE /-/state/users/{user}`` erases from it.
Exit status: 0 erased or nothing to erase, 2 a configuration error or an unreachable store.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace

from guardrail.errors import ConfigError
from guardrail.config.loading import load_settings
from guardrail.state import StateAccess, open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    erase = sub.add_parser(
        "erase",
        help="erase one user's state",
        description="Erase everything the state store keeps about one user.",
    )
    erase.add_argument("--user", required=True, metavar="ID", help="the raw user id, as sent")
    erase.add_argument("--config", metavar="FILE", help="YAML config file (as for serve)")
    erase.set_defaults(run=run_erase)


async def _erase(access: StateAccess, raw_user: str) -> bool:
    try:
        return await access.erase(raw_user)
    finally:
        await access.store.aclose()


def run_erase(args: argparse.Namespace) -> int:
    if not args.user.strip():
        raise ConfigError("--user: must be a non-empty user id")
    settings = load_settings(config=args.config, require_upstream=False)
    config = settings.state
    if config.backend != "redis":
        raise ConfigError(
            f"{settings.sources.get('state.backend', 'default')}: state.backend: "
            f"{config.backend!r} state lives inside the serving process; erase it there with "
            "DELETE /-/state/users/{user} on the admin listener"
        )
    config = replace(config, timeout=max(config.timeout, 5.0))  # one-off, not in a reply's path
    access = StateAccess(open_store(config), config)
    erased = asyncio.run(_erase(access, args.user))
    key = access.user_key(args.user)
    print(f"user {key}: {'state erased' if erased else 'no state stored'}", file=sys.stdout)
    return 0
