"""Policy sets loaded once per test session, shared by the folders that read them."""

from __future__ import annotations

from guardrail.policy import PolicySet, load_policies

from .paths import DEFAULT_PACK, STACK_FIXTURES

PACK: PolicySet = load_policies(DEFAULT_PACK)
"""The default pack."""
STACK_POLICIES: PolicySet = load_policies(STACK_FIXTURES / "policies")
"""The loopback stack's main set."""
STRICT: PolicySet = load_policies(STACK_FIXTURES / "strict")
"""The loopback stack's ``/strict`` route set."""
