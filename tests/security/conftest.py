"""The security tests reuse the kits of the other test folders and ``bench/``: make the
repository root importable (``tests.ops.opskit``, ``tests.proxy.proxykit``, ``bench.procs``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
