"""What every console request passes first: the kill switch, CSRF, the session, the headers."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from flask import Response, current_app, flash, g, redirect, request, session, url_for

from core.services import accounts
from receiver.console import bp, csrf
from receiver.console.render import page
from receiver.db import get_session

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from core.models import User

P = ParamSpec("P")
R = TypeVar("R")

TOKEN_ID = "token_id"  # noqa: S105  (a session key name, not a secret)
SIGNED_IN_AT = "signed_in_at"
# A session ends after this even if the browser stays open; signing in again starts a new one.
SESSION_SECONDS = 12 * 3600
# No inline script or style anywhere: the stylesheet is our own file, charts are inline SVG
# drawn with presentation attributes, and forms post to ourselves only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@bp.before_request
def guard() -> Response | None:
    """Refuse everything when no key signs sessions; check CSRF; load the signed-in person."""
    if not current_app.secret_key:
        return page(
            "console/error.html",
            503,
            title="Console switched off",
            message="The console is off: set SECRET_KEY to switch it on (README, Configuration).",
        )
    csrf.protect()  # every POST carries its form's token, or CSRFError (400)
    g.console_user = None
    g.console_scopes = frozenset()
    g.session_ended = None
    token_id = session.get(TOKEN_ID)
    if token_id is None:
        return None
    signed_in_at = session.get(SIGNED_IN_AT)
    if not isinstance(token_id, int) or not isinstance(signed_in_at, int):
        session.clear()
        return None
    if time.time() - signed_in_at > SESSION_SECONDS:
        session.clear()
        g.session_ended = "Your session has expired: sign in again."
        return None
    found = accounts.authenticate_token_id(get_session(), token_id)
    if found is None:
        session.clear()
        g.session_ended = "Your session has ended: its access token was revoked."
        return None
    g.console_user, record = found
    g.console_scopes = record.scope_set
    return None


@bp.after_request
def secure_headers(response: Response) -> Response:
    """Send the console's security headers on every page, errors included."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    # Pages show callback URLs and response bodies: keep them out of shared caches.
    response.headers["Cache-Control"] = "no-store"
    return response


def signed_in(scope: str) -> Callable[[Callable[P, R]], Callable[P, R | BaseResponse]]:
    """Demand a signed-in person whose token has `scope`, as the API's endpoint demands it."""

    def decorator(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
        @functools.wraps(view)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
            if g.console_user is None:
                if g.session_ended:
                    flash(g.session_ended, "error")
                wanted = request.full_path if request.method == "GET" else None
                return redirect(url_for("console.sign_in", next=wanted))
            if scope not in g.console_scopes:
                return page(
                    "console/error.html",
                    403,
                    title="Not allowed",
                    message=f"Your access token lacks the {scope} scope this page needs.",
                )
            return view(*args, **kwargs)

        return wrapped

    return decorator


def person() -> User:
    """Return the signed-in person (inside a `signed_in` view)."""
    user: User = g.console_user
    return user
