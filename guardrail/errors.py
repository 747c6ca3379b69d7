"""The one exception tree of guardrail.

    GuardrailError                 base of everything guardrail raises on purpose
    ├── ConfigError                settings: a bad flag, config key, env override or value
    │   └── RouteError             a bad ``routes:`` entry (also a ValueError)
    ├── PolicyError                a policy set that cannot be loaded (file, line, policy id)
    │   └── PolicyTestFailure      an inline policy test that does not hold (``guardrail test``)
    ├── RegexTimeout               a policy regex ran out of its CPU budget (also a TimeoutError)
    ├── FormatError                a body a wire-format module cannot parse (also a ValueError)
    ├── Undecodable                a Content-Encoding guardrail cannot undo (also a ValueError)
    │   └── TooLarge               a body that decodes past the inspection limit
    ├── StateUnavailable           the state store failed or did not answer within state.timeout
    ├── RequestRefused             a request guardrail answers itself, without the upstream
    │   ├── UnsafeTarget           a target that could leave the upstream base     -> 400
    │   ├── NoRoute                no route matches the path (also a LookupError)  -> 404
    │   └── Refused                a limit turned it away (``guardrail.proxy.limits``)
    │       ├── RequestTooLarge    over ``max_request_bytes``                       -> 413
    │       ├── ClientBusy         over ``max_upstream_per_client``                 -> 429
    │       ├── StreamsBusy        streams hold their share of the upstream pool    -> 503
    │       └── RequestsBusy       other requests hold their share of the pool      -> 503
    └── UpstreamError              the upstream could not be reached or answered badly
        ├── UpstreamUnavailable    connection refused, DNS failure, reset before a reply  -> 502
        ├── UpstreamTimeout        no reply within the configured timeout                 -> 504
        ├── RelayAborted           the body broke off after the response started (dropped)
        └── Stalled                a stream sent nothing but keep-alives for stall_timeout

Each class lives here; the modules that raise them import them from here (and their old names
there keep working). A few private exceptions stay inside the module whose control flow they
serve and never leave it (the YAML reader's ``_Problem``, ``guardrail check``'s ``_Bad``, the referral
report's ``_Malformed``).

Load-time errors (ConfigError, PolicyError) are raised before the proxy serves anything, so a bad
configuration never surfaces at request time. Request-time errors never reach a client as a
traceback: the pipeline turns them into an error body in the wire format of the request.
"""

from __future__ import annotations

import traceback


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


class RouteError(ConfigError, ValueError):
    """A bad ``routes:`` entry; ``index`` says which (the message names the key)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"routes[{index}].{message}")
        self.index = index


class RegexTimeout(GuardrailError, TimeoutError):
    """A policy pattern spent its whole budget on one text (it backtracks catastrophically)."""


class FormatError(GuardrailError, ValueError):
    """A request or response body that a wire-format module cannot parse.

    The message describes the shape problem (``"choices[0].message is not an object"``) and never
    quotes message or reply text, so it is safe to log.
    """


class Undecodable(GuardrailError, ValueError):
    """A body whose Content-Encoding guardrail cannot undo (unknown coding, corrupt data)."""


class TooLarge(Undecodable):
    """A body that decodes to more than the inspection limit."""


class StateUnavailable(GuardrailError):
    """The state store (``guardrail.state``) failed or did not answer within ``state.timeout``.

    ``cause`` says what in one word (``timeout``, ``connection``, ``error``), for the log line
    and a metric label. The request flow catches it and goes on without state: state-based
    policies are skipped, everything else works. The message never names a user.
    """

    def __init__(self, message: str = "", *, cause: str = "error") -> None:
        super().__init__(message)
        self.cause = cause


class RequestRefused(GuardrailError):
    """A request guardrail answers itself: the upstream never sees it."""


class UnsafeTarget(RequestRefused, ValueError):
    """A request target that could leave the configured upstream base; answered with 400."""


class NoRoute(RequestRefused, LookupError):
    """No configured route matches the request path (answered 404, nothing forwarded)."""


class Refused(RequestRefused):
    """A request a limit turned away; ``code`` is also its metric reason (``REFUSALS``)."""

    status = 503
    code = "refused"
    kind = "server_error"
    retry_after: int | None = None


class RequestTooLarge(Refused):
    status, code, kind = 413, "request_too_large", "invalid_request_error"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body larger than {limit} bytes (max_request_bytes).")


class ClientBusy(Refused):
    status, code, kind, retry_after = 429, "client_busy", "rate_limit_error", 1

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many requests in flight from this client (at most {limit}); retry later."
        )


class StreamsBusy(Refused):
    status, code, kind, retry_after = 503, "streams_busy", "server_error", 1

    def __init__(self, limit: int) -> None:
        super().__init__(f"All {limit} stream slots of the upstream pool are taken; retry later.")


class RequestsBusy(Refused):
    status, code, kind, retry_after = 503, "requests_busy", "server_error", 1

    def __init__(self, limit: int) -> None:
        super().__init__(f"All {limit} request slots of the upstream pool are taken; retry later.")


class UpstreamError(GuardrailError):
    """The upstream could not be reached or did not answer in time.

    ``host`` is the configured upstream host it was sent to, ``cause`` what went wrong in one
    word (``dns``, ``refused``, ``tls``, ``reset``, ``connect-timeout``, ``read-timeout``, ...):
    both for the request's log line, never for the client.
    """

    def __init__(
        self, message: str = "", *, host: str | None = None, cause: str | None = None
    ) -> None:
        super().__init__(message)
        self.host = host
        self.cause = cause


class UpstreamUnavailable(UpstreamError):
    """Connection refused, name resolution failed, or the connection broke before a reply."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured timeout."""


class RelayAborted(UpstreamError):
    """The upstream body broke off after the response started; the client connection is dropped
    so the client sees a truncated response instead of a falsely complete one."""


class Stalled(UpstreamError):
    """The stall deadline passed while the pump waited for upstream bytes."""


def safe_stack(exc: BaseException, limit: int = 8) -> list[str]:
    """The innermost frames of ``exc`` as ``file:line:function``: no message, no locals."""
    frames = traceback.extract_tb(exc.__traceback__)[-limit:]
    return [f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}:{frame.name}" for frame in frames]
