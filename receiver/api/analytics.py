"""GET /v1/analytics/summary and /v1/analytics/timeseries (SPEC 8)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from core.analytics_responses import AnalyticsSummary, AnalyticsTimeseries
from core.schemas import AnalyticsQuery
from core.services import analytics
from receiver.auth import current_user
from receiver.db import get_session
from receiver.openapi import operation

bp = Blueprint("analytics", __name__, url_prefix="/v1/analytics")

# Read-only figures about the user's own account: the scope of GET /v1/user, which already
# reports numberOfMeetingsHosted. An analyst's token needs neither scheduler nor start_meeting.
SCOPE = "user_info"


@bp.get("/summary")
@operation(
    {200: (AnalyticsSummary, "The figures of the range.")}, scope=SCOPE, query=AnalyticsQuery
)
def summary() -> Response:
    """Summarise the user's meetings and callbacks in [from, to)."""
    span = analytics.parse_range(request.args, buckets=False)
    body = analytics.summary(get_session(), current_user().id, span)
    return jsonify(body.render())


@bp.get("/timeseries")
@operation(
    {200: (AnalyticsTimeseries, "One bucket per hour or day.")}, scope=SCOPE, query=AnalyticsQuery
)
def timeseries() -> Response:
    """Count the user's meetings per UTC hour or day of [from, to), empty buckets included."""
    span = analytics.parse_range(request.args, buckets=True)
    body = analytics.timeseries(get_session(), current_user().id, span)
    return jsonify(body.render())
