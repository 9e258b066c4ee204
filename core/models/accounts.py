"""Users and their access tokens."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow

SCOPES = ("user_info", "scheduler", "start_meeting")


class User(Base):
    """An account: owns meetings, tokens, webhooks and a signing secret."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    full_name: Mapped[str] = mapped_column(sa.String(200))
    personal_url: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    registration_date: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The signing secret must be readable to sign callbacks, so it is stored as issued.
    signing_secret: Mapped[str] = mapped_column(sa.String(100))
    previous_signing_secret: Mapped[str | None] = mapped_column(sa.String(100))
    previous_secret_valid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class AccessToken(Base):
    """A bearer token, stored only as its SHA-256 hash."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Space-separated, as OAuth writes scopes.
    scopes: Mapped[str] = mapped_column(sa.String(200))
    label: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    @property
    def scope_set(self) -> frozenset[str]:
        """Return the token's scopes as a set."""
        return frozenset(self.scopes.split())
