"""Wake-ups a transaction causes, published only once it has committed.

Services call `note()` for each task message their changes call for; the receiver and the
workers install `publish_after_commit()` on their session factories. A rolled-back
transaction sends nothing, and a message never goes out before the row it names is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

KEY = "meetinghooks.wakeups"
Publish = Callable[[str, dict[str, Any]], None]


def note(session: Session, task_name: str, **kwargs: Any) -> None:
    """Record that `task_name(**kwargs)` must run once this session's transaction commits."""
    session.info.setdefault(KEY, []).append((task_name, kwargs))


def pending(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """Return the wake-ups noted in the current transaction, oldest first."""
    return list(session.info.get(KEY, []))


def take(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """Remove and return the wake-ups noted in the current transaction."""
    taken: list[tuple[str, dict[str, Any]]] = session.info.pop(KEY, [])
    return taken


def publish_after_commit(factory: sessionmaker[Session], publish: Publish) -> None:
    """Publish each committed transaction's wake-ups through `publish`; drop rolled-back ones.

    `publish` must not raise: the rows are committed, and the sweeps re-send a lost message.
    """

    # A savepoint's release or rollback fires these too: only the real transaction decides.
    @event.listens_for(factory, "after_commit")
    def _publish(session: Session) -> None:
        if session.in_nested_transaction():
            return
        for task_name, kwargs in take(session):
            publish(task_name, kwargs)

    @event.listens_for(factory, "after_rollback")
    def _drop(session: Session) -> None:
        if session.in_nested_transaction():
            return
        take(session)
