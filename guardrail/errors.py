"""The one exception tree of guardrail.

    GuardrailError                 base of everything guardrail raises on purpose
    ├── ConfigError                settings: a bad flag, config key, env override or value
    ├── PolicyError                a policy set that cannot be loaded (file, line, policy id)
    │   └── PolicyTestFailure      an inline policy test that does not hold (``guardrail test``)
    └── UpstreamError              the upstream could not be reached or answered badly
        ├── UpstreamUnavailable    connection refused, DNS failure, reset before a reply  -> 502
        └── UpstreamTimeout        no reply within the configured timeout                 -> 504

Load-time errors (ConfigError, PolicyError) are raised before the proxy serves anything, so a bad
configuration never surfaces at request time. Request-time errors never reach a client as a
traceback: the pipeline turns them into an error body in the wire format of the request.
"""

from __future__ import annotations


class GuardrailError(Exception):
    """Base class for every error guardrail raises on purpose."""


class ConfigError(GuardrailError):
    """A setting is malformed; the message names the option and where it came from."""


class PolicyError(GuardrailError):
    """A policy set cannot be loaded.

    ``str()`` renders ``file:line: policy 'id': message`` with the parts that are known, so an
    operator can jump straight to the offending line.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        policy_id: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.policy_id = policy_id
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        who = f"policy '{self.policy_id}': " if self.policy_id else ""
        return f"{where}{who}{self.message}"


class PolicyTestFailure(PolicyError):
    """An inline test of a policy does not hold."""


class UpstreamError(GuardrailError):
    """The upstream could not be reached or did not answer in time.

    ``host`` is the configured upstream host it was sent to, ``cause`` what went wrong in one
    word (``dns``, ``refused``, ``tls``, ``reset``, ``connect-timeout``, ``read-timeout``, ...):
    both for the request's log line, never for the client.
    """

    def __init__(self, message: str, *, host: str | None = None, cause: str | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.cause = cause


class UpstreamUnavailable(UpstreamError):
    """Connection refused, name resolution failed, or the connection broke before a reply."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured timeout."""
