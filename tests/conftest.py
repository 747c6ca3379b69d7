from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> object:
    """A test that configures logging (a command run in-process, a served app) leaves the
    process's structlog configuration as it found it, so a later test's log capture sees every
    level again."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
