"""Alert rules of a user and the alerts they fired (SPEC 7)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow
from core.models.meetings import Meeting


class AlertType(enum.StrEnum):
    """What a rule watches; an alert's callback `type` is `alert.` + this."""

    MEETING_LONG_RUNNING = "meeting.long_running"
    MEETING_NO_START = "meeting.no_start"
    MEETING_SHORT = "meeting.short"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_FAILING = "delivery.failing"
    WEBHOOK_DISABLED = "webhook.disabled"
    WEBHOOK_RECOVERED = "webhook.recovered"


def one_of(column: str, values: type[enum.StrEnum]) -> str:
    """Return the SQL of a CHECK that `column` holds one of the enumeration's values."""
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


class AlertRule(Base):
    """A user's rule: a condition to watch and the URL its alerts are sent to."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        sa.CheckConstraint(one_of("type", AlertType), name="type"),
        sa.Index("ix_alert_rules_user_type", "user_id", "type"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(32))
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    callback_url: Mapped[str] = mapped_column(sa.String(2048))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # DELETE hides the rule and stops it firing; the alerts it fired stay listed.
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # How far the alert sweep has looked for presenter links that expired (`meeting.no_start`):
    # each sweep reads only the links that expired since, never the whole history.
    swept_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Alert(Base):
    """One firing of a rule for one subject; the unique key makes each condition fire once.

    `subject_key` names what the condition is about (`meeting:12`, `delivery:34`,
    `webhook:5:wh_...` for one registration's disabling, or for a recovery
    `webhook:5:after:78`, the failed attempt that ended the streak it recovers from).
    """

    __tablename__ = "alerts"
    __table_args__ = (
        sa.UniqueConstraint("rule_id", "subject_key"),
        sa.Index("ix_alerts_user_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    rule_id: Mapped[int] = mapped_column(sa.ForeignKey("alert_rules.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(32))
    subject_key: Mapped[str] = mapped_column(sa.String(100))
    meeting_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("meetings.id", ondelete="CASCADE"), index=True
    )
    # The delivery the condition is about (not the alert's own delivery).
    about_delivery_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("deliveries.id", ondelete="SET NULL", use_alter=True), index=True
    )
    text: Mapped[str] = mapped_column(sa.Text)
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    fired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


# The alert sweep's `meeting.long_running` query: a user's meetings running now, by start time
# (the single-column index on started_at would scan every meeting ever started).
sa.Index("ix_meetings_user_status_started", Meeting.user_id, Meeting.status, Meeting.started_at)
