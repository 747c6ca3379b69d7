"""Reading guardrail's metrics in tests: one sample of the registry, or the exposition text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from guardrail.observe.metrics import REGISTRY
from guardrail.observe.metrics import render as render_metrics


def value(name: str, **labels: str) -> float:
    """The current value of one sample of guardrail's registry (0.0 when absent)."""
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text -> {sample name: [(labels, value)]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def exposition() -> str:
    """What ``/metrics`` would answer now."""
    body, _ = render_metrics(None)
    return body.decode("utf-8")
