"""Analytics: the summary as figures, the timeseries as charts, and a time range picker."""

from __future__ import annotations

import datetime as dt

from flask import Response, request, url_for

from core.db import utcnow
from core.errors import ValidationFailed
from core.services import analytics as analytics_service
from core.services.delivery_series import delivery_series
from core.validation import isoformat
from receiver.console import bp
from receiver.console.charts import bar_chart
from receiver.console.forms import BadFilter, utc_input
from receiver.console.guard import person, signed_in
from receiver.console.render import page
from receiver.db import get_session

# The picker's ready-made ranges, up to now: (label, length, interval).
PRESETS = {
    "24h": ("Last 24 hours", dt.timedelta(hours=24), "hour"),
    "7d": ("Last 7 days", dt.timedelta(days=7), "day"),
    "30d": ("Last 30 days", dt.timedelta(days=30), "day"),
}
DEFAULT_PRESET = "24h"


def _range_values() -> tuple[dict[str, str], str | None]:
    """Return the API's range parameters for the picker's choice, and the preset chosen."""
    has_custom = request.args.get("from") or request.args.get("to")
    preset = request.args.get("preset") or (None if has_custom else DEFAULT_PRESET)
    if preset in PRESETS:
        _, length, interval = PRESETS[preset]
        now = utcnow().replace(microsecond=0)
        bounds = {"from": now - length, "to": now}
        return {k: isoformat(v) or "" for k, v in bounds.items()} | {"interval": interval}, preset
    values = {"interval": request.args.get("interval", "hour")}
    for name in ("from", "to"):
        chosen = utc_input(request.args, name)
        if chosen is not None:
            values[name] = isoformat(chosen) or ""
    return values, None


@bp.get("/analytics")
# Analytics are the user_info scope's, as /v1/analytics is.
@signed_in("user_info")
def analytics() -> Response:
    """Show the summary and the charts of the chosen range."""
    try:
        values, preset = _range_values()
        span = analytics_service.parse_range(values, buckets=True)
    except BadFilter as bad:
        return _picker_only([str(bad)])
    except ValidationFailed as bad:
        return _picker_only([f"{e['field']}: {e['message']}" for e in bad.errors] or [bad.message])
    session = get_session()
    user_id = person().id
    summary = analytics_service.summary(session, user_id, span)
    series = analytics_service.timeseries(session, user_id, span)
    calls = delivery_series(session, user_id, span)
    # The same buckets as the timeseries' (one origin, one step), with their starts typed.
    starts = [bucket.start for bucket in calls]
    unit = span.interval
    charts = [
        bar_chart(
            "meetings",
            f"Meetings started and ended per {unit}",
            starts,
            unit,
            [
                ("started", [b.started for b in series.buckets]),
                ("ended", [b.ended for b in series.buckets]),
            ],
        ),
        bar_chart(
            "concurrency",
            f"Peak concurrent meetings per {unit}",
            starts,
            unit,
            [("peak", [b.peakConcurrent for b in series.buckets])],
        ),
        bar_chart(
            "success",
            f"Callback success rate per {unit} (%)",
            starts,
            unit,
            [
                (
                    "success",
                    [
                        None if c.success_rate is None else round(c.success_rate * 100, 1)
                        for c in calls
                    ],
                )
            ],
            ceiling=100,
        ),
        bar_chart(
            "latency",
            f"Mean callback attempt latency per {unit} (ms)",
            starts,
            unit,
            [("latency", [c.avg_latency_ms for c in calls])],
        ),
    ]
    return page(
        "console/analytics.html",
        title="Analytics",
        span=span,
        summary=summary,
        charts=charts,
        presets=_preset_links(),
        preset=preset,
        problems=[],
    )


def _preset_links() -> list[tuple[str, str, str]]:
    return [
        (key, label, url_for("console.analytics", preset=key))
        for key, (label, _, _) in PRESETS.items()
    ]


def _picker_only(problems: list[str]) -> Response:
    return page(
        "console/analytics.html",
        400,
        title="Analytics",
        span=None,
        summary=None,
        charts=[],
        presets=_preset_links(),
        preset=None,
        problems=problems,
    )
