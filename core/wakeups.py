"""Wake-ups a transaction causes, published only once it has committed.

Services call `note()` for each task message their changes call for; the receiver and the
workers install `publish_after_commit()` on their session factories. A rolled-back
transaction sends nothing, and a message never goes out before the row it names is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from core import task_names

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

KEY = "meetinghooks.wakeups"
Publish = Callable[[str, dict[str, Any]], None]
WakeUp = tuple[str, dict[str, Any]]
# What caused a wake-up, for the logs: a request id, or None (a sweep, a worker's own work).
Origin = str | None
# A batch message names at most this many rows.
BATCH_LIMIT = 100
# Wake-ups that fold into one message: task -> (its batch task, the id argument, the list one).
# `deliver` is its own batch task: its batch keeps the first id as `delivery_id`.
BATCHES = {
    task_names.PROCESS_EVENT: (task_names.PROCESS_EVENTS, "event_id", "event_ids"),
    task_names.DELIVER: (task_names.DELIVER, "delivery_id", "more_delivery_ids"),
}


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


def fold(wake_ups: list[WakeUp]) -> list[WakeUp]:
    """Fold wake-ups of a batchable task into batch messages, where the first of them stood.

    A lone wake-up stays a message of its own task, so a worker that does not know the batch
    task yet (a rolling upgrade) still gets it. A task that is its own batch task (`deliver`)
    gets the first id of each batch under its single argument and the others in the list: a
    worker of the release before, which reads only the first, still sends that one, and the
    sweep wakes the others a lease later.
    """
    return [message for message, _ in fold_traced([(wake_up, None) for wake_up in wake_ups])]


def fold_traced(wake_ups: list[tuple[WakeUp, Origin]]) -> list[tuple[WakeUp, list[Origin]]]:
    """Fold as `fold` does, keeping each wake-up's origin (the request id that caused it).

    A batch message's origins line up with its ids (`origins[i]` caused `event_ids[i]`); any
    other message has the one origin of its wake-up.
    """
    slots: list[tuple[WakeUp, list[Origin]] | str] = []  # or the task whose batch goes here
    ids: dict[str, list[tuple[Any, Origin]]] = {}
    for (task_name, kwargs), origin in wake_ups:
        batch = BATCHES.get(task_name)
        if batch is None or set(kwargs) != {batch[1]}:
            slots.append(((task_name, kwargs), [origin]))
            continue
        if task_name not in ids:
            slots.append(task_name)
        ids.setdefault(task_name, []).append((kwargs[batch[1]], origin))
    folded: list[tuple[WakeUp, list[Origin]]] = []
    for slot in slots:
        if not isinstance(slot, str):
            folded.append(slot)
            continue
        batch_task, one, many = BATCHES[slot]
        named = ids[slot]
        if len(named) == 1:
            folded.append(((slot, {one: named[0][0]}), [named[0][1]]))
            continue
        for i in range(0, len(named), BATCH_LIMIT):
            chunk = named[i : i + BATCH_LIMIT]
            chunk_ids = [n for n, _ in chunk]
            origins = [o for _, o in chunk]
            if batch_task != slot:
                folded.append(((batch_task, {many: chunk_ids}), origins))
            else:
                first, *more = chunk_ids
                folded.append(((slot, {one: first, **({many: more} if more else {})}), origins))
    return folded


def publish_after_commit(factory: sessionmaker[Session], publish: Publish) -> None:
    """Publish each committed transaction's wake-ups through `publish`; drop rolled-back ones.

    `publish` must not raise: the rows are committed, and the sweeps re-send a lost message.
    """

    # A savepoint's release or rollback fires these too: only the real transaction decides.
    @event.listens_for(factory, "after_commit")
    def _publish(session: Session) -> None:
        if session.in_nested_transaction():
            return
        for task_name, kwargs in fold(take(session)):
            publish(task_name, kwargs)

    @event.listens_for(factory, "after_rollback")
    def _drop(session: Session) -> None:
        if session.in_nested_transaction():
            return
        take(session)
