"""Rendering helpers of the console: one way to make a page, and the filters templates use."""

from __future__ import annotations

import datetime as dt

from flask import Response, render_template

from core.services.alerts import span
from receiver.console import bp

NOTHING = "—"


def page(template: str, http_status: int = 200, /, **context: object) -> Response:
    """Render a console page as an HTML response."""
    return Response(render_template(template, **context), status=http_status, mimetype="text/html")


@bp.app_template_filter("when")
def when(value: dt.datetime | None) -> str:
    """Show a time in UTC to the second: `2026-12-05 10:00:00`."""
    if value is None:
        return NOTHING
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """Show a duration the way alerts say it: `45 s`, `12 min`, `2 h 5 min`."""
    return NOTHING if seconds is None else span(seconds)


@bp.app_template_filter("local_input")
def local_input(value: dt.datetime | None) -> str:
    """Show a UTC time as a `datetime-local` input's value: `2026-12-05T10:00`."""
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")
