"""The web console at /console: pages over the API's own services, for people, not programs.

A person signs in with an access token; the session is Flask's signed cookie holding the
token's id (never the token), checked against the database on every request, so revoking
the token ends it. Every page is rendered on the server and needs no JavaScript.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint
from flask_wtf.csrf import CSRFProtect

if TYPE_CHECKING:
    from flask import Flask

    from core.config import Settings

bp = Blueprint("console", __name__, url_prefix="/console")
csrf = CSRFProtect()


def init_app(app: Flask, settings: Settings) -> None:
    """Configure the session cookie and CSRF protection, and register the console's pages."""
    if settings.secret_key is not None:
        app.secret_key = settings.secret_key.get_secret_value()
    app.config.update(
        SESSION_COOKIE_NAME="meetinghooks_console",
        SESSION_COOKIE_PATH=bp.url_prefix,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        # The console checks its own forms (receiver.console.guard); the JSON API takes bearer
        # tokens, which a browser never sends by itself, so it needs no CSRF token.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A form stays valid as long as the session: a tab left open over lunch still works.
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)

    from receiver.console import (  # noqa: PLC0415  (the pages register themselves on bp)
        alerts,
        analytics,
        deliveries,
        errors,
        guard,
        meetings,
        session,
    )

    del alerts, analytics, deliveries, errors, guard, meetings, session
    app.register_blueprint(bp)
