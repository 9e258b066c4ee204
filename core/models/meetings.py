"""Meetings, their presenter links and their registered callbacks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow

MEETING_STATUSES = ("scheduled", "started", "ended")
EVENT_TYPES = ("meeting.start", "meeting.end")


class Meeting(Base):
    """An ad hoc or scheduled meeting and its lifecycle state (derived from its events)."""

    __tablename__ = "meetings"
    __table_args__ = (
        sa.CheckConstraint("status IN ('scheduled', 'started', 'ended')", name="status"),
        sa.CheckConstraint("kind IN ('adhoc', 'scheduled')", name="kind"),
        # A conference id is unique among meetings that have not ended (SPEC 4).
        sa.Index(
            "uq_meetings_live_conference_id",
            "conference_id",
            unique=True,
            postgresql_where=sa.text("status <> 'ended' AND deleted_at IS NULL"),
            sqlite_where=sa.text("status <> 'ended' AND deleted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    meeting_code: Mapped[str] = mapped_column(sa.String(9), unique=True)
    conference_id: Mapped[str] = mapped_column(sa.String(9), index=True)
    organizer_code: Mapped[str] = mapped_column(sa.String(4))
    meeting_name: Mapped[str | None] = mapped_column(sa.String(200))
    meeting_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    meeting_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    participants: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    start_with_personal_url: Mapped[bool] = mapped_column(default=False)
    viewer_mode: Mapped[str | None] = mapped_column(sa.String(16))
    viewer_app_detection: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="scheduled")
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    duration_seconds: Mapped[int | None]
    # Counts the events delivered for this meeting; callbacks carry it as `sequence`.
    event_sequence: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class PresenterLink(Base):
    """A one-time presenter token, stored hashed, valid for a limited time."""

    __tablename__ = "presenter_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    meeting_id: Mapped[int] = mapped_column(
        sa.ForeignKey("meetings.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Webhook(Base):
    """The callback a meeting registered for one event type (one per type, SPEC 4)."""

    __tablename__ = "webhooks"
    __table_args__ = (sa.UniqueConstraint("meeting_id", "event_type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    meeting_id: Mapped[int] = mapped_column(sa.ForeignKey("meetings.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(sa.String(32))
    callback_url: Mapped[str] = mapped_column(sa.String(2048))
    custom_callback_data: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    # Its deliveries wait for the earlier ones of the meeting to the same URL (`ordered: false`
    # in the webhook entry opts out); rows from before 0005 are ordered.
    ordered: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(200))
