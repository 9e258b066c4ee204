"""Users, access tokens and signing secrets."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from core.db import utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.models import SCOPES, AccessToken, User
from core.pagination import MAX_ROW_ID
from core.security import hash_token, new_access_token, new_signing_secret

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

PERSONAL_URL_RE = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
# Top-level paths of our own that a personal URL must not shadow.
RESERVED_PERSONAL_URLS = frozenset(
    {
        "v1",
        "presenter",
        "audio",
        "healthz",
        "readyz",
        "metrics",
        "openapi",
        "static",
        "api",
        "console",
    }
)
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
SECRET_ROTATION_OVERLAP = dt.timedelta(hours=24)
MAX_NAME_LENGTH = 200  # users.full_name is VARCHAR(200)
MAX_LABEL_LENGTH = 100  # access_tokens.label is VARCHAR(100)
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit for a forward path


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only moment its clear text exists."""

    token: str
    record: AccessToken


def create_user(
    session: Session, *, email: str, full_name: str, personal_url: str | None = None
) -> tuple[User, IssuedToken]:
    """Create a user with a signing secret and an all-scopes token."""
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_RE.match(email):
        raise ValidationFailed("invalid email", errors=[{"field": "email", "message": "invalid"}])
    full_name = full_name.strip()
    if not full_name or len(full_name) > MAX_NAME_LENGTH or CONTROL_RE.search(full_name):
        raise ValidationFailed(
            f"name must be 1-{MAX_NAME_LENGTH} characters without control characters",
            errors=[{"field": "fullName", "message": "invalid"}],
        )
    if personal_url is not None:
        personal_url = personal_url.strip().lower()
        if not PERSONAL_URL_RE.match(personal_url) or personal_url in RESERVED_PERSONAL_URLS:
            raise ValidationFailed(
                "personal URL must be 2-63 lowercase letters, digits or hyphens, "
                "start with a letter, and not be a reserved word",
                errors=[{"field": "personalUrl", "message": "invalid"}],
            )
    clash = session.scalar(
        sa.select(User).where(
            sa.or_(User.email == email, User.personal_url == personal_url)
            if personal_url
            else User.email == email
        )
    )
    if clash is not None:
        field = "email" if clash.email == email else "personalUrl"
        raise Conflict(f"{field} is already taken", code=f"{field.lower()}-taken")
    user = User(
        email=email,
        full_name=full_name,
        personal_url=personal_url,
        signing_secret=new_signing_secret(),
    )
    session.add(user)
    session.flush()
    return user, create_token(session, user=user)


def find_user(session: Session, email: str) -> User:
    """Return the user with this email or raise NotFound."""
    user = session.scalar(sa.select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"no user with email {email}")
    return user


def create_token(
    session: Session, *, user: User, scopes: tuple[str, ...] = SCOPES, label: str | None = None
) -> IssuedToken:
    """Issue a new access token; only its hash is stored."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValidationFailed(f"scopes must be among {', '.join(SCOPES)}")
    if label is not None and (len(label) > MAX_LABEL_LENGTH or CONTROL_RE.search(label)):
        raise ValidationFailed(
            f"label must be at most {MAX_LABEL_LENGTH} characters without control characters"
        )
    token = new_access_token()
    record = AccessToken(
        user_id=user.id, token_hash=hash_token(token), scopes=" ".join(scopes), label=label
    )
    session.add(record)
    session.flush()
    return IssuedToken(token=token, record=record)


def revoke_token(session: Session, token: str) -> AccessToken:
    """Revoke a token given in clear; revoking twice is harmless."""
    record = session.scalar(
        sa.select(AccessToken).where(AccessToken.token_hash == hash_token(token))
    )
    if record is None:
        raise NotFound("no such token")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
    return record


def authenticate(session: Session, token: str) -> tuple[User, AccessToken] | None:
    """Return the user and token record for a live bearer token, else None."""
    row = session.execute(
        sa.select(User, AccessToken)
        .join(AccessToken, AccessToken.user_id == User.id)
        .where(AccessToken.token_hash == hash_token(token), AccessToken.revoked_at.is_(None))
    ).first()
    return (row[0], row[1]) if row else None


def authenticate_token_id(session: Session, token_id: int) -> tuple[User, AccessToken] | None:
    """Return the user and token record for a live token known by id (a console session)."""
    if not 1 <= token_id <= MAX_ROW_ID:
        return None
    row = session.execute(
        sa.select(User, AccessToken)
        .join(AccessToken, AccessToken.user_id == User.id)
        .where(AccessToken.id == token_id, AccessToken.revoked_at.is_(None))
    ).first()
    return (row[0], row[1]) if row else None


def rotate_signing_secret(session: Session, user: User, *, now: dt.datetime | None = None) -> User:
    """Issue a new signing secret; the old one keeps signing for 24 hours."""
    now = now or utcnow()
    user.previous_signing_secret = user.signing_secret
    user.previous_secret_valid_until = now + SECRET_ROTATION_OVERLAP
    user.signing_secret = new_signing_secret()
    return user


def active_signing_secrets(user: User, *, now: dt.datetime | None = None) -> list[str]:
    """Return the secrets that sign callbacks now: the current one, then the previous if live."""
    now = now or utcnow()
    secrets = [user.signing_secret]
    if (
        user.previous_signing_secret
        and user.previous_secret_valid_until
        and user.previous_secret_valid_until > now
    ):
        secrets.append(user.previous_signing_secret)
    return secrets
