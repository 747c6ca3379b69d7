"""Semantic judges: a model asked a rubric question about the exchange, answering yes or no.

An opt-in detector kind for what word lists miss (implicit language, paraphrase): a policy
combines the judge's signal with the lexical ones (``user.crisis.lexical or user.crisis.judge``).
The engine parses ``judge:`` detectors and reads the fact ``judge.<id>``; this package answers it,
asking any OpenAI-compatible Chat Completions endpoint (a hosted small model, or a local model
served by Ollama or vLLM).

Modules, in the order a question travels:

* :mod:`~guardrail.judge.endpoints`: the ``judges:`` setting (URL, model, API key variable,
  timeout, fail mode, limits), validated at load time.
* :mod:`~guardrail.judge.answer`: a question (what the engine's ``JudgeSpec`` gives) and its
  answer, which becomes the fact ``judge.<id>`` by the endpoint's fail mode.
* :mod:`~guardrail.judge.reading`: the text a judge is shown, cut to what its ``reads`` allows.
* :mod:`~guardrail.judge.cache` and :mod:`~guardrail.judge.budget`: one question per turn, and
  at most ``calls_per_minute`` calls.
* :mod:`~guardrail.judge.question`: the request on the wire and the yes/no read back.
* :mod:`~guardrail.judge.runner`: asks, concurrently with the upstream where it can, and turns
  each answer (or its absence, by the fail mode) into a fact.
* :mod:`~guardrail.judge.offline`: the same for ``guardrail check``, which is synchronous.

Importing the package loads only the pure parts (settings, answers, reading); the runner, with its
HTTP client and metrics, is ``guardrail.judge.runner``.
"""

from guardrail.judge.answer import FACT_PREFIX, Answer, JudgeQuestion, fact_name
from guardrail.judge.endpoints import FAIL_MODES, JudgeEndpoint, parse_judges, resolve_judges
from guardrail.judge.reading import READS, shown_text

__all__ = [
    "FACT_PREFIX",
    "FAIL_MODES",
    "READS",
    "Answer",
    "JudgeEndpoint",
    "JudgeQuestion",
    "fact_name",
    "parse_judges",
    "resolve_judges",
    "shown_text",
]
