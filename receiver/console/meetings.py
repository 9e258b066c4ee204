"""The meetings list and a meeting's timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, request, url_for

from core import pagination
from core.models.meetings import MEETING_STATUSES
from core.services import meeting_list
from core.services import timeline as timelines
from receiver.console import bp
from receiver.console.forms import ActionForm, BadFilter, utc_input
from receiver.console.guard import person, signed_in
from receiver.console.render import page
from receiver.db import get_session

if TYPE_CHECKING:
    import datetime as dt


@bp.get("/meetings")
# Reading meetings is the scheduler scope's, as GET /v1/meetings/{id} is.
@signed_in("scheduler")
def meetings() -> Response:
    """List the person's meetings, newest first, filtered by status and start time."""
    status = request.args.get("status") or None
    problems: list[str] = []
    if status is not None and status not in MEETING_STATUSES:
        problems.append(f"status: must be one of {', '.join(MEETING_STATUSES)}")
        status = None
    times: dict[str, dt.datetime | None] = {}
    for name in ("from", "to"):
        try:
            times[name] = utc_input(request.args, name)
        except BadFilter as bad:
            problems.append(str(bad))
            times[name] = None
    found = meeting_list.list_meetings(
        get_session(),
        person(),
        status=status,
        since=times["from"],
        until=times["to"],
        limit=pagination.DEFAULT_PAGE_SIZE,
        cursor=request.args.get("cursor") or None,
    )
    next_page = (
        url_for("console.meetings", **_with_cursor(found.next_cursor))
        if found.next_cursor
        else None
    )
    return page(
        "console/meetings.html",
        400 if problems else 200,
        title="Meetings",
        meetings=found.items,
        statuses=MEETING_STATUSES,
        status=status or "",
        since=times["from"],
        until=times["to"],
        problems=problems,
        next_page=next_page,
    )


def _with_cursor(cursor: str) -> dict[str, Any]:
    """Return this page's filters with the cursor of the next page."""
    return {**request.args.to_dict(), "cursor": cursor}


@bp.get("/meetings/<int:meeting_id>")
# The timeline shows the delivery log's records: the log's scope, as GET .../events needs.
@signed_in("start_meeting")
def meeting(meeting_id: int) -> Response:
    """Show a meeting and its timeline: events by event time, their callbacks and attempts."""
    found, entries = timelines.timeline(get_session(), person(), meeting_id)
    return page(
        "console/meeting.html",
        title=f"Meeting {found.id}",
        meeting=found,
        entries=entries,
        action=ActionForm(next=request.path),
    )
