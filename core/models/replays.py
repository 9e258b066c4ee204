"""Bulk replays of deliveries, and the `Idempotency-Key` that answers a repeated one."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow


class DeliveryReplay(Base):
    """One bulk replay: what it asked for, how many deliveries it re-sent, and its key.

    The row is written in the transaction that writes the new deliveries, so a key never
    names a replay that did not happen. An expired key is cleared (the row stays as the
    record), which frees it for a new replay.
    """

    __tablename__ = "delivery_replays"
    __table_args__ = (
        # Keys are per user; NULL (no key, or expired) never collides.
        sa.UniqueConstraint("user_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    # sha256 of the canonical request, to tell a repeat from a reuse of the key.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    request: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    delivery_count: Mapped[int]
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    key_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
