from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from .mockjudge import MockJudge, serve


@dataclass
class Judge:
    mock: MockJudge
    url: str


@pytest.fixture
async def judge() -> AsyncIterator[Judge]:
    """A fresh mock judge on loopback for one test."""
    mock = MockJudge()
    async with serve(mock) as url:
        yield Judge(mock, url)
