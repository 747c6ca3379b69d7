"""Where things are: the repository, the default pack, and the fixture folders more than one
test folder reads (each test folder's own fixtures stay next to its tests)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""
DEFAULT_PACK = ROOT / "policies"
"""The default policy pack that ships with guardrail."""
FIXTURES = Path(__file__).parent / "fixtures"
POLICY_FIXTURES = FIXTURES / "policy"
"""Small policy sets for the engine (``basic``, ``actions``, ``failing``, ``ordering``)."""
PROXY_FIXTURES = FIXTURES / "proxy"
"""The proxy's fixture policy sets (``policies``, ``bad``, ``regenerate``)."""
OPS_POLICIES = FIXTURES / "ops" / "policies"
"""A policy set with a hit of every kind the metrics, logs and dashboards count."""
STACK_FIXTURES = FIXTURES / "stack"
"""The policy sets of the loopback stack (``policies``, ``strict``)."""
