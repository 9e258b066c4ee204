"""One JSON error body for every error the API returns (SPEC 3)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NotRequired, TypedDict

from flask import Response, g, jsonify
from flask_limiter import RateLimitExceeded
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from core.errors import DomainError, FieldError
from receiver import limits

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad-request",
    401: "invalid-token",
    403: "insufficient-scope",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    413: "body-too-large",
    415: "unsupported-media-type",
    429: "rate-limited",
    503: "service-unavailable",
}
# A database that cannot be reached (down, restarting, locked, pool exhausted) is a 503 the
# client may retry (SPEC 3), never a 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
RETRY_AFTER_SECONDS = 5


class ErrorBody(TypedDict):
    """The error shape join.me clients read (`Message`) plus our stable `code`."""

    Message: str
    code: str
    errors: list[FieldError]
    retryAfter: NotRequired[int]


def error_response(
    status: int,
    code: str,
    message: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build the JSON error response; the only place an error body is made."""
    body: ErrorBody = {"Message": message, "code": code, "errors": errors or []}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _handle_domain_error(exc: DomainError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.errors)


def _handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {}
    if exc.response is not None:
        headers = {k: v for k, v in exc.response.headers.items() if k.lower() != "content-type"}
    elif status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    message = exc.description or exc.name
    if status == 413:
        message = "request body is too large"
    return error_response(status, HTTP_CODES.get(status, "http-error"), message, headers=headers)


def _handle_rate_limited(exc: RateLimitExceeded) -> Response:
    refused = limits.refusal(exc)
    return error_response(
        429, HTTP_CODES[429], refused.message, headers={"Retry-After": str(refused.retry_after)}
    )


def _rollback() -> None:
    session = g.get("db_session")
    if session is not None:
        session.rollback()


def _handle_database_unavailable(exc: Exception) -> Response:
    # The driver's text may name hosts and users: it goes to the log only.
    log.warning("receiver.database.unavailable", exc_info=exc)
    try:
        _rollback()
    except DATABASE_UNAVAILABLE:
        log.debug("receiver.database.rollback_failed", exc_info=True)
    return error_response(
        503,
        "database-unavailable",
        "the database is unavailable; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _handle_unexpected(exc: Exception) -> Response:
    # The traceback goes to the log, never to the client (SPEC 3).
    log.exception("receiver.request.failed")
    _rollback()
    return error_response(500, "internal-error", "internal server error")


def register_error_handlers(app: Flask) -> None:
    """Route every error through `error_response`."""
    app.register_error_handler(DomainError, _handle_domain_error)
    app.register_error_handler(RateLimitExceeded, _handle_rate_limited)
    app.register_error_handler(HTTPException, _handle_http_exception)
    for exc_type in DATABASE_UNAVAILABLE:
        app.register_error_handler(exc_type, _handle_database_unavailable)
    app.register_error_handler(Exception, _handle_unexpected)
