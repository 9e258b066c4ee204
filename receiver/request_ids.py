"""A request id for every request: the caller's `X-Request-Id` when sane, else a new one.

It is bound to every log line of the request (core.logs), echoed in the response's
`X-Request-Id`, and goes with the wake-ups the request causes (receiver.tasks), so that the
workers' lines for that work carry it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import g, request
from structlog.contextvars import clear_contextvars

from core import logs

if TYPE_CHECKING:
    from flask import Flask, Response


def _bind() -> None:
    # A thread serves many requests: start each from an empty context.
    clear_contextvars()
    g.request_id = logs.request_id_from(request.headers.get(logs.REQUEST_ID_HEADER))
    logs.bind_request_ids([g.request_id])


def _echo(response: Response) -> Response:
    response.headers[logs.REQUEST_ID_HEADER] = g.get("request_id") or logs.request_id_from(None)
    return response


def _unbind(_exc: BaseException | None = None) -> None:
    clear_contextvars()


def install(app: Flask) -> None:
    """Register the hooks; call before any extension whose hooks may log or answer early."""
    app.before_request(_bind)
    app.after_request(_echo)
    app.teardown_request(_unbind)
