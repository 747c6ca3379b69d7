"""Settings and routes are checked through the proxy app in-process (``tests/kit/proxyapp.py``)."""

from __future__ import annotations

from tests.kit.proxyapp import fixture_policies, proxy, settings, upstream

__all__ = ["fixture_policies", "proxy", "settings", "upstream"]
