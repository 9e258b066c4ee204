"""Logging for every process: our structlog calls and stdlib's records (gunicorn, Celery, libraries)
rendered by one structlog ProcessorFormatter, as human-readable text or as one JSON object a line.

A request id bound with `bind_request_ids` (the receiver binds one per request, the workers the
ids their task message carries) is added to every line logged in that context, whichever logger
wrote it. Every line passes `core.redaction` before it is rendered, in both formats.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.contextvars import bind_contextvars, get_contextvars, unbind_contextvars
from structlog.typing import Processor

from core.redaction import redact

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
DEFAULT_LOG_FORMAT: LogFormat = "text"

REQUEST_ID_HEADER = "X-Request-Id"
# The context keys: one request id, or several (a task message that folds many requests).
REQUEST_ID = "request_id"
REQUEST_IDS = "request_ids"
# A caller's id is kept only if it is short and harmless in a log line or a header; anything
# else (too long, spaces, quotes, control characters) is replaced by one of ours.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")


def parse_log_format(value: str | None) -> LogFormat:
    """Return the log format `value` names (empty: the default); raise ValueError otherwise."""
    name = (value or DEFAULT_LOG_FORMAT).strip().lower()
    for known in LOG_FORMATS:
        if name == known:
            return known
    raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")


def is_sane_request_id(value: object) -> bool:
    """Whether `value` may stand as a request id as it is."""
    return isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value) is not None


def request_id_from(header: str | None) -> str:
    """Return the caller's request id when it is sane, else a new one."""
    if header is not None and is_sane_request_id(header):
        return header
    return uuid.uuid4().hex


def bind_request_ids(ids: Iterable[str | None]) -> list[str]:
    """Bind the distinct sane ids to the log context (`request_id` if one, else `request_ids`)."""
    distinct = list(dict.fromkeys(i for i in ids if is_sane_request_id(i)))
    unbind_contextvars(REQUEST_ID, REQUEST_IDS)
    if len(distinct) == 1:
        bind_contextvars(request_id=distinct[0])
    elif distinct:
        bind_contextvars(request_ids=distinct)
    return cast("list[str]", distinct)


def current_request_ids() -> list[str]:
    """Return the request ids bound to the current context, if any."""
    context = get_contextvars()
    if REQUEST_ID in context:
        return [context[REQUEST_ID]]
    return list(context.get(REQUEST_IDS, []))


def current_request_id() -> str | None:
    """Return the current context's request id when it has exactly one."""
    ids = current_request_ids()
    return ids[0] if len(ids) == 1 else None


def _redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_values(item) for item in value]
    if isinstance(value, dict):
        return {key: _redact_values(item) for key, item in value.items()}
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank out the secrets in every value of the event, the traceback text included."""
    for key, value in event_dict.items():
        event_dict[key] = _redact_values(value)
    return event_dict


def _add_pid(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Receiver and workers run several processes each: say which one spoke.
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _drop_celery_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Celery passes its message's atoms again as `extra={"data": ...}`: the task's arguments
    # too, and twice the length of every line for nothing the message does not say.
    if str(event_dict.get("logger", "")).startswith("celery"):
        event_dict.pop("data", None)
    return event_dict


def _shared_processors() -> list[Processor]:
    """Return the steps both kinds of record take before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_pid,
    ]


def formatter(
    log_format: LogFormat, *, colors: bool = False
) -> structlog.stdlib.ProcessorFormatter:
    """Return the formatter of every handler: text or JSON, tracebacks included, redacted."""
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: a rich traceback would print local variables, secrets among them.
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
    return structlog.stdlib.ProcessorFormatter(
        # stdlib records: their `extra=` fields become keys of the event.
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_celery_data],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction, so their secrets are blanked too.
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )


def configure(
    log_format: LogFormat, level: str | int = "INFO", stream: TextIO | None = None
) -> None:
    """Send every record of this process to `stream` (stderr) in `log_format`; idempotent."""
    stream = stream or sys.stderr
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, colors=log_format == "text" and stream.isatty()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Python's warnings are lines of this process too.
    logging.captureWarnings(True)


def get_logger(name: str) -> Any:
    """Return a structlog logger named `name` (key-value events; see `configure`)."""
    return structlog.stdlib.get_logger(name)
