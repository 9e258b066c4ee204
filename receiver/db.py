"""One database session per request, closed when the app context ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, g
from sqlalchemy.orm import Session, sessionmaker

from core import wakeups

if TYPE_CHECKING:
    from flask import Flask


def get_session() -> Session:
    """Return this request's session, creating it on first use."""
    if "db_session" not in g:
        factory: sessionmaker[Session] = current_app.extensions["meetinghooks.session_factory"]
        g.db_session = factory()
    session: Session = g.db_session
    return session


def close_session(_exc: BaseException | None = None) -> None:
    """Close the request's session; an uncommitted transaction is rolled back."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


def publishing_factory(
    base: sessionmaker[Session], publish: wakeups.Publish
) -> sessionmaker[Session]:
    """Return a factory like `base` whose sessions publish their wake-ups after commit.

    A copy, so that the caller's factory (shared with tests' own sessions) publishes nothing.
    """
    factory: sessionmaker[Session] = sessionmaker(class_=base.class_, **base.kw)
    wakeups.publish_after_commit(factory, publish)
    return factory


def init_app(app: Flask) -> None:
    """Register the session teardown on the app."""
    app.teardown_appcontext(close_session)
