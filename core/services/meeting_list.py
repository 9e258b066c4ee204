"""The user's meetings of every kind and status, newest first, for the console's list."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from core.models import Meeting
from core.models.meetings import MEETING_STATUSES
from core.pagination import DEFAULT_PAGE_SIZE, Page, newest_first

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.orm import Session

    from core.models import User


def start_time() -> sa.ColumnElement[dt.datetime]:
    """Return when a meeting starts: when it started, else when it is scheduled, else created."""
    return sa.func.coalesce(Meeting.started_at, Meeting.meeting_start, Meeting.created_at)


def list_meetings(
    session: Session,
    user: User,
    *,
    status: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> Page[Meeting]:
    """Return one page of the user's live meetings, newest first, filtered as asked.

    `since` and `until` bound the meeting's start ([since, until)), as `start_time` defines it;
    deleted meetings are left out, as the meetings API leaves them out.
    """
    if status is not None and status not in MEETING_STATUSES:
        raise ValueError(f"unknown meeting status {status!r}")
    query = sa.select(Meeting).where(Meeting.user_id == user.id, Meeting.deleted_at.is_(None))
    if status is not None:
        query = query.where(Meeting.status == status)
    if since is not None:
        query = query.where(start_time() >= since)
    if until is not None:
        query = query.where(start_time() < until)
    return newest_first(session, query, Meeting.id, limit=limit, cursor=cursor)
