"""The recorder of a proxy, built from its settings: its routes and APIs, its audit sink."""

from __future__ import annotations

from guardrail.config.settings import Settings
from guardrail.formats.registry import API_NAMES
from guardrail.observe.audit import Auditor
from guardrail.observe.record import Recorder

__all__ = ["recorder_for"]


def recorder_for(settings: Settings) -> Recorder:
    """The recorder of a proxy built from ``settings``: its routes (each with every API: a
    route recognises all of them from the path), its audit sink.

    Raises OSError when the audit file cannot be opened (a start-up error)."""
    audit = settings.audit
    return Recorder(
        [(route.prefix, api) for route in settings.routes for api in API_NAMES],  # any, any
        Auditor(audit) if audit.sink != "off" else None,
        audit.conversation_header,
    )
