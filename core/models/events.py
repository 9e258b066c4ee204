"""Lifecycle events (the inbox), outgoing deliveries (the outbox) and their attempts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow

EVENT_SOURCES = ("presenter", "api", "platform")
EVENT_OUTCOMES = (
    "applied",  # changed the meeting's state
    "duplicate",  # said again what the meeting already knew
    "out-of-order",  # contradicted later-known facts (a start after the end); kept, not applied
    "unknown-meeting",  # named no meeting we know; recorded and counted, never delivered
)
DELIVERY_STATUSES = ("pending", "succeeded", "failed")


class Event(Base):
    """One lifecycle event, stored once per (source, source_event_id).

    The row is written before anything else happens, so it doubles as the durable inbox:
    `processed_at` stays null until a worker has applied it.
    """

    __tablename__ = "events"
    __table_args__ = (
        sa.UniqueConstraint("source", "source_event_id"),
        sa.Index("ix_events_unprocessed", "processed_at", "received_at"),
        sa.Index("ix_events_meeting_time", "meeting_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    source: Mapped[str] = mapped_column(sa.String(16))
    # The platform's webhook-id, or our own id for internal events.
    source_event_id: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(32))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    meeting_id: Mapped[int | None] = mapped_column(sa.ForeignKey("meetings.id", ondelete="CASCADE"))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(sa.String(32))
    # How often the sweep re-enqueued it: a growing number means a poisoned event.
    enqueue_count: Mapped[int] = mapped_column(default=0)
    last_enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One outbound message to one URL: pending until a 2xx, or failed.

    Its subject is an event (a meeting's callback) or an alert; its destination a meeting's
    webhook or an alert rule's URL. Signing, retries, leases and the attempt log are the same
    for both.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        # One callback per event, webhook and meeting state: an event whose callback must be
        # sent again with corrected values (a late start changes the end's duration) gets a
        # new delivery, with a new `webhook-id`, at the meeting's new sequence. A bulk replay
        # re-sends it as the next `generation`: the constraint lets only one replay of a
        # delivery through, however many run at once.
        sa.UniqueConstraint("event_id", "webhook_id", "meeting_sequence", "generation"),
        # The claim's order (next_attempt_at, id): walked in index order, the pick stops at the
        # first claimable row instead of checking every due one (the ordering and bound checks
        # are subqueries) before a sort.
        sa.Index("ix_deliveries_due", "status", "next_attempt_at", "id"),
        sa.Index("ix_deliveries_user_created", "user_id", "id"),
        # The ordering rule's look for an earlier pending delivery of the same meeting and URL.
        # Not partial (WHERE status = 'pending'): the claim binds the status as a parameter,
        # and PostgreSQL's generic plans cannot use an index whose predicate they cannot prove.
        sa.Index("ix_deliveries_meeting_sequence", "meeting_id", "meeting_sequence"),
        # The per-host bound's count of live leases (locked_until > now: a short range).
        sa.Index("ix_deliveries_host_lease", "destination_host", "locked_until"),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        sa.CheckConstraint("(event_id IS NULL) <> (alert_id IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The `webhook-id` header: stable across retries and redeliveries.
    message_id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    # The subject: exactly one of these.
    event_id: Mapped[int | None] = mapped_column(sa.ForeignKey("events.id", ondelete="CASCADE"))
    alert_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("alerts.id", ondelete="CASCADE"), unique=True
    )
    # The destination: a meeting's webhook or an alert rule (null once it is deleted).
    webhook_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("webhooks.id", ondelete="SET NULL"), index=True
    )
    alert_rule_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("alert_rules.id", ondelete="SET NULL"), index=True
    )
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    meeting_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("meetings.id", ondelete="CASCADE"), index=True
    )
    # `meeting.start`, `meeting.end`, or `alert.<rule type>`.
    event_type: Mapped[str] = mapped_column(sa.String(32))
    # The meeting's event sequence the body carries (`data.sequence`); the server default
    # serves the release before 0002, which does not know the column.
    meeting_sequence: Mapped[int] = mapped_column(server_default=sa.text("0"))
    # 0 for the delivery the event caused; each bulk replay of it adds one (a new row with a
    # new `webhook-id`, the same body). The server default serves the release before 0006.
    generation: Mapped[int] = mapped_column(server_default=sa.text("0"))
    callback_url: Mapped[str] = mapped_column(sa.String(2048))
    # `host:port` of the callback URL: at most DELIVERY_MAX_IN_FLIGHT_PER_HOST attempts are in
    # flight to one (`outbound_http.destination_host`).
    destination_host: Mapped[str] = mapped_column(sa.String(300), server_default=sa.text("''"))
    # Waits while an earlier delivery of its meeting to its URL is pending (its webhook's
    # `ordered`, fixed when it is made); an alert is never ordered.
    ordered: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The exact body bytes, fixed when the delivery is created, so every retry is identical.
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempt_count: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # A worker holds the delivery until this time; past it the sweep may hand it to another.
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # When the sweep last sent a wake-up for it, so a due delivery is not re-enqueued on every
    # sweep while its message waits in the queue.
    last_enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Wake-ups the sweep re-sent since the delivery became due and nothing came of them:
    # each doubles the wait before the next one, as the inbox sweep does.
    enqueue_count: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class DeliveryAttempt(Base):
    """One HTTP attempt of a delivery, as the delivery log shows it."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        sa.ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None]
    latency_ms: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.String(64))
    response_body: Mapped[str | None] = mapped_column(sa.Text)


class HostSlot(Base):
    """One of a callback host's DELIVERY_MAX_IN_FLIGHT_PER_HOST sending slots (PostgreSQL).

    Taken by a claim with SKIP LOCKED, it is busy while the delivery it names still holds the
    lease it names: recording the attempt (or the lease running out) frees it with no write
    here. A slot is held by one lease at a time, so a host never has more attempts in flight
    than slots, across every worker (docs/DECISIONS.md, "Ordered delivery and a bound").
    """

    __tablename__ = "host_slots"

    host: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    slot: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    delivery_id: Mapped[int | None]
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
