"""Console errors are pages, not the API's JSON bodies."""

from __future__ import annotations

from flask import Response
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from core.errors import DomainError
from receiver.console import bp
from receiver.console.render import page


@bp.errorhandler(DomainError)
def domain_error(exc: DomainError) -> Response:
    """Show a service's refusal (another user's meeting is 404, as in the API)."""
    title = "Not found" if exc.status == 404 else "Request refused"
    return page("console/error.html", exc.status, title=title, message=exc.message)


@bp.errorhandler(CSRFError)
def csrf_error(exc: CSRFError) -> Response:
    """Refuse a form that did not come from a console page of this session."""
    return page(
        "console/error.html",
        400,
        title="Form refused",
        message="This form was not sent from a page of your session (its CSRF token is "
        f"missing or wrong: {exc.description}). Reload the page and try again.",
    )


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Show any other HTTP error as a page."""
    return page(
        "console/error.html", exc.code or 500, title=exc.name, message=exc.description or ""
    )
