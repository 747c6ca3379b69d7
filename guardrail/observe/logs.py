"""Structured logs: set-up, request ids, the per-request record and its one canonical line.

Privacy guarantee: nothing here ever receives message text, reply text, request or response
bodies, query strings, or header values other than ``x-request-id``. The canonical line is built
from a fixed allow-list of fields (:data:`REQUEST_FIELDS`); errors are logged by type and by a
stack of ``file:line:function`` frames, never by message (an exception message can quote data).

Output is JSON lines when stderr is not a terminal (or ``log_format: json``), a readable console
format otherwise. Third-party loggers (uvicorn, httpx) go through the same renderer; httpx's own
request lines are silenced because they would print full URLs, query strings included. In JSON
mode the canonical line, written once per request, skips the standard-library route and is
rendered straight into the same stream (the same line, a fraction of the cost).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog

from guardrail.errors import safe_stack  # re-exported: its old home

__all__ = [
    "REQUEST_FIELDS",
    "Exchange",
    "bind_process",
    "configure_logging",
    "get_logger",
    "log_request",
    "new_request_id",
    "safe_stack",
]

_QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "uvicorn.access": logging.WARNING,
}
_HANDLER_NAME = "guardrail"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass
class Exchange:
    """Per-request state: created by the proxy endpoint when a request arrives, filled in by the
    pipeline as it goes, logged once (:func:`log_request`) when the response has been sent.

    Holds metadata only (ids, names, numbers, policy ids), never message text, reply text or
    header values other than request ids, so it can be logged whole.
    """

    request_id: str
    method: str
    path: str
    route: str = "/"
    api: str = "passthrough"
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    locale: str | None = None
    stream: bool | None = None
    holdback: str | None = None  # a guarded stream's holdback mode
    stream_fault: str | None = None  # upstream-broken, -stalled, -unterminated, -event-too-large
    status: int | None = None
    upstream_status: int | None = None
    upstream_request_id: str | None = None
    upstream_s: float | None = None
    guardrail_s: float | None = None
    inspected: bool | None = None
    reason: str | None = None
    policies: list[str] | None = None
    shadow: list[str] | None = None
    action: str | None = None
    actions: list[str] | None = None
    changed: bool | None = None
    blocked: bool | None = None
    choices: int | None = None
    regenerate: str | None = None  # how asking the upstream once more ended (guardrail.proxy.regenerate)
    regenerate_policies: list[str] | None = None  # the policies that asked for it
    policy_digest: str | None = None
    error: str | None = None
    error_stack: list[str] | None = None
    upstream_host: str | None = None  # on an upstream failure: the configured host it went to
    upstream_cause: str | None = None  # and why it failed (dns, refused, tls, read-timeout, ...)

    def fields(self) -> dict[str, object]:
        """The canonical log line's fields, latencies in milliseconds."""
        out = {
            k: v for k, v in vars(self).items() if k not in ("started", "upstream_s", "guardrail_s")
        }
        out["upstream_ms"] = _ms(self.upstream_s)
        out["guardrail_ms"] = _ms(self.guardrail_s)
        out["duration_ms"] = _ms(time.perf_counter() - self.started)
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


REQUEST_FIELDS = (
    *(
        f.name
        for f in dataclasses.fields(Exchange)
        if f.name not in ("started", "upstream_s", "guardrail_s")
    ),
    "upstream_ms",
    "guardrail_ms",
    "duration_ms",
)


def _renderer(fmt: str, stream: TextIO) -> structlog.types.Processor:
    if _is_json(fmt, stream):
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=hasattr(stream, "isatty") and stream.isatty())


class _OnceAProcess(logging.Filter):
    """Let uvicorn's life-cycle lines through once a process: ``guardrail serve`` runs up to three
    servers (proxy, admin, demo) in one process, and each would print the same lines."""

    _LIFECYCLE = frozenset({
        "Started server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
        "Shutting down",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process [%d]",
    })  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.error" or record.msg not in self._LIFECYCLE:
            return True
        if record.msg in self._seen:
            return False
        self._seen.add(str(record.msg))
        return True


_PROCESS_FIELDS: dict[str, object] = {}
"""Fields every line of this process carries: a worker of ``guardrail serve --workers N`` sets
``worker`` (its slot, 0 to N-1) and ``pid``, so each line says which process wrote it."""


def bind_process(**fields: object) -> None:
    """Add ``fields`` to every log line this process writes from now on (canonical line too)."""
    _PROCESS_FIELDS.update(fields)


def _add_process_fields(
    logger: object, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    for name, value in _PROCESS_FIELDS.items():
        event.setdefault(name, value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library through one renderer on ``stream`` (stderr).

    Safe to call again (tests, reload): the previous guardrail handler is replaced.
    """
    given, stream = stream, sys.stderr if stream is None else stream
    levelno = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process_fields,
        scrub_exc_info,
    ]
    processors = [*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _renderer(fmt, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    handler.addFilter(_OnceAProcess())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    for name, quiet in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet, levelno))
    global _request_logger
    json_out = _is_json(fmt, stream)
    _request_logger = (list(processors), _RequestLine(given, levelno)) if json_out else None


def _is_json(fmt: str, stream: TextIO) -> bool:
    return fmt == "json" or (fmt == "auto" and not (hasattr(stream, "isatty") and stream.isatty()))


class _RequestLine:
    """Renders the canonical line as one JSON object and writes it to a stream (None: whatever
    ``sys.stderr`` is at the time), without structlog's or logging's per-call machinery.

    The line is the one the standard-library route prints (the fields, then ``event``,
    ``level``, ``logger``, ``timestamp`` in UTC ISO form), at a fraction of the cost, which is
    paid on every request (bench/README.md). Like a logging handler it never raises into the
    request: a closed or broken stream loses the line, not the response.
    """

    def __init__(self, stream: TextIO | None, levelno: int) -> None:
        self._stream = stream
        self._levelno = levelno

    def emit(self, level: str, line: dict[str, object]) -> None:
        if _LEVELS[level] < self._levelno:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        line["event"], line["level"], line["logger"] = "request", level, "guardrail.request"
        line["timestamp"] = f"{stamp}.{int(now % 1 * 1_000_000):06d}Z"
        for name, value in _PROCESS_FIELDS.items():
            line.setdefault(name, value)
        stream = sys.stderr if self._stream is None else self._stream
        try:
            stream.write(_dumps(line) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


_LEVELS = {"info": logging.INFO, "error": logging.ERROR}
_dumps = json.JSONEncoder(ensure_ascii=True, default=str).encode


_request_logger: tuple[list[Any], _RequestLine] | None = None
"""Set by :func:`configure_logging` for JSON output: a copy of the processors it configured and
the direct logger. The direct logger is used only while structlog still has those processors, so
anyone who reconfigures structlog (``structlog.testing.capture_logs`` in a test) sees the line."""


def scrub_exc_info(
    logger: object, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace ``exc_info`` (ours or a library's, e.g. uvicorn's "Exception in ASGI application")
    by the exception type and a message-free stack: exception messages can quote request data."""
    info = event.pop("exc_info", None)
    if info is True:
        info = sys.exc_info()
    if isinstance(info, BaseException):
        info = (type(info), info, info.__traceback__)
    if isinstance(info, tuple) and len(info) == 3 and isinstance(info[1], BaseException):
        event["error_type"] = type(info[1]).__name__
        event["error_stack"] = safe_stack(info[1])
    event.pop("exception", None)
    event.pop("stack", None)
    return event


def get_logger(name: str = "guardrail") -> Any:
    """A structlog logger; call it with an event name and key-value context only."""
    return structlog.get_logger(name)


def new_request_id(headers: Mapping[str, str]) -> str:
    """The client's ``x-request-id`` when it is a plain token (<= 128 chars), else a fresh id."""
    offered = headers.get("x-request-id", "")
    return offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex


def log_request(ex: Exchange) -> None:
    """Emit the canonical ``request`` line: only :data:`REQUEST_FIELDS`, unset fields left out."""
    fields = ex.fields()
    line = {name: fields[name] for name in REQUEST_FIELDS if fields.get(name) is not None}
    status = fields.get("status")
    level = "error" if isinstance(status, int) and status >= 500 and "error" in line else "info"
    direct = _request_logger
    if direct is not None and structlog.get_config()["processors"] == direct[0]:
        direct[1].emit(level, line)
    else:
        getattr(get_logger("guardrail.request"), level)("request", **line)
