"""guardrail: a conversation-guardrail middleware for supportive chatbots."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
