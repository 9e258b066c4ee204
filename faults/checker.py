"""What `make faults` proves after each fault, read from the database (the source of truth).

For one scenario's meetings and events:
- every event acknowledged with a 2xx is stored exactly once (`events.source_event_id` is its
  `webhook-id`) and processed;
- every acknowledged event has its callback, and each delivery either reached the
  callback receiver (a verified request with its `webhook-id`, whose body is the delivery's own
  bytes every time it came) or is visibly `failed`;
- nothing stays stuck: no event unprocessed and no delivery `pending` past its due time plus a
  sweep once the suite has waited for the work to settle.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.models import Delivery, DeliveryAttempt, Event

if TYPE_CHECKING:
    from faults.load import SentEvent
    from faults.receiver import Arrival

# An event row as the checker selects it: id, source_event_id, meeting_id, type, received_at,
# processed_at.
EventRow = sa.Row[int, str, int | None, str, dt.datetime, dt.datetime | None]
SETTLE_SECONDS = 60  # the longest wait for the work to settle after the load ends


@dataclass
class Verdict:
    """One scenario's figures, as the table shows them, and what the figures rest on."""

    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    duplicates: int = 0
    callbacks: int = 0  # deliveries the scenario's events made
    delivered: int = 0
    failed: int = 0  # visibly failed: allowed
    missing: int = 0
    stuck: int = 0
    recover_seconds: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _epoch(value: dt.datetime) -> float:
    if value.tzinfo is None:  # SQLite hands back naive UTC; PostgreSQL aware
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _arrival_problems(delivery: Delivery, seen: list[Arrival]) -> list[str]:
    """Return what is wrong with a delivery's arrivals: other bytes, or a refused signature."""
    problems = []
    body_sha = hashlib.sha256(delivery.body.encode()).hexdigest()
    if any(a.body_sha256 != body_sha for a in seen):
        problems.append(f"delivery {delivery.id} ({delivery.message_id}) arrived with other bytes")
    refused = [a for a in seen if not a.verified]
    if refused:
        problems.append(f"delivery {delivery.id}: signature refused ({refused[0].error})")
    return problems


@dataclass
class Checker:
    """Reads one deployment's database for one scenario's meetings and events."""

    engine: sa.Engine
    sweep_seconds: float
    inbox_after_seconds: float

    def _rows(
        self, meeting_ids: list[int], webhook_ids: list[str]
    ) -> tuple[list[EventRow], list[Delivery]]:
        with self.engine.connect() as conn:
            events = list(
                conn.execute(
                    sa.select(
                        Event.id, Event.source_event_id, Event.meeting_id, Event.type,
                        Event.received_at, Event.processed_at,
                    ).where(Event.source == "platform", Event.source_event_id.in_(webhook_ids))
                )
            )  # fmt: skip
        with Session(self.engine) as session:
            deliveries = list(
                session.scalars(
                    sa.select(Delivery).where(
                        Delivery.meeting_id.in_(meeting_ids), Delivery.event_id.is_not(None)
                    )
                )
            )
            session.expunge_all()  # plain records from here on
        return events, deliveries

    def settled(self, meeting_ids: list[int], acknowledged: list[SentEvent]) -> bool:
        """Return whether every acknowledged event is processed and no callback is pending."""
        ids = [event.webhook_id for event in acknowledged]
        with self.engine.connect() as conn:
            processed = conn.scalar(
                sa.select(sa.func.count()).where(
                    Event.source == "platform",
                    Event.source_event_id.in_(ids),
                    Event.processed_at.is_not(None),
                )
            )
            pending = conn.scalar(
                sa.select(sa.func.count()).where(
                    Delivery.meeting_id.in_(meeting_ids),
                    Delivery.event_id.is_not(None),
                    Delivery.status == "pending",
                )
            )
        return processed == len(set(ids)) and pending == 0

    def wait_settled(
        self, meeting_ids: list[int], acknowledged: list[SentEvent], timeout: float = SETTLE_SECONDS
    ) -> float:
        """Poll until settled or `timeout`; return the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            try:
                if self.settled(meeting_ids, acknowledged):
                    break
            except sa.exc.OperationalError:  # a database that is only just back
                pass
            time.sleep(0.5)
        return time.monotonic() - began

    def in_flight(self, meeting_ids: list[int]) -> int:
        """Return how many of these deliveries are leased right now (an attempt under way)."""
        now = dt.datetime.now(dt.UTC)
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    sa.select(sa.func.count()).where(
                        Delivery.meeting_id.in_(meeting_ids),
                        Delivery.status == "pending",
                        Delivery.locked_until > now,
                    )
                )
                or 0
            )

    def unprocessed(self, meeting_ids: list[int]) -> int:
        """Return how many of these meetings' stored events wait for a worker right now."""
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    sa.select(sa.func.count()).where(
                        Event.meeting_id.in_(meeting_ids), Event.processed_at.is_(None)
                    )
                )
                or 0
            )

    def verdict(
        self,
        meeting_ids: list[int],
        sent: list[SentEvent],
        arrivals: list[Arrival],
        fault_end: float,
    ) -> Verdict:
        """Check the scenario; `fault_end` (epoch s) is when the fault was undone."""
        now = time.time()
        result = Verdict(sent=len(sent))
        events, deliveries = self._rows(meeting_ids, [event.webhook_id for event in sent])
        self._check_events(result, sent, events, now)
        self._check_callbacks(result, sent, deliveries, arrivals, now)
        with self.engine.connect() as conn:
            known = set(conn.scalars(sa.select(Delivery.message_id)))
        strangers = sorted({a.webhook_id for a in arrivals if a.webhook_id not in known})
        if strangers:
            result.problems.append(
                f"{len(strangers)} callbacks arrived whose webhook-id no delivery has:"
                f" {', '.join(strangers[:5])}"
            )
        result.recover_seconds, last = self._recovery(events, deliveries, fault_end)
        result.notes.append(f"last to finish: {last}")
        return result

    def _check_events(
        self, result: Verdict, sent: list[SentEvent], events: list[EventRow], now: float
    ) -> None:
        """Every acknowledged event is stored once, as sent, and processed."""
        acknowledged = [event for event in sent if event.acknowledged is not None]
        result.acknowledged = len(acknowledged)
        rows: dict[str, list[EventRow]] = collections.defaultdict(list)
        for row in events:
            rows[row.source_event_id].append(row)
        result.stored = len(rows)
        lost = [event.webhook_id for event in acknowledged if not rows[event.webhook_id]]
        result.lost = len(lost)
        if lost:
            result.problems.append(f"acknowledged but not stored: {', '.join(lost[:10])}")
        twice = [key for key, found in rows.items() if len(found) > 1]
        result.duplicates = sum(len(rows[key]) - 1 for key in twice)
        if twice:
            result.problems.append(f"stored more than once: {', '.join(twice[:10])}")
        altered = [
            event.webhook_id
            for event in sent
            for row in rows.get(event.webhook_id, [])
            if (row.meeting_id, row.type) != (event.meeting_id, event.type)
        ]
        if altered:
            result.problems.append(f"stored with another meeting or type: {altered[:10]}")
        unprocessed = [row for row in events if row.processed_at is None]
        if unprocessed:
            result.problems.append(
                f"{len(unprocessed)} stored events never processed (event ids "
                f"{', '.join(str(row.id) for row in unprocessed[:10])})"
            )
        result.stuck += sum(
            _epoch(row.received_at) + self.inbox_after_seconds + 2 * self.sweep_seconds < now
            for row in unprocessed
        )

    def _check_callbacks(
        self,
        result: Verdict,
        sent: list[SentEvent],
        deliveries: list[Delivery],
        arrivals: list[Arrival],
        now: float,
    ) -> None:
        """Every acknowledged event has its callback; each reached the receiver or is failed.

        Every meeting registered a callback for both types, so each acknowledged event calls
        for one (at least: a late start sends the end again with corrected values).
        """
        wanted = {(e.meeting_id, e.type) for e in sent if e.acknowledged is not None}
        never_made = sorted(wanted - {(d.meeting_id, d.event_type) for d in deliveries})
        if never_made:
            result.problems.append(
                f"{len(never_made)} callbacks never created (meeting, type): {never_made[:5]}"
            )
        by_id: dict[str, list[Arrival]] = collections.defaultdict(list)
        for arrival in arrivals:
            by_id[arrival.webhook_id].append(arrival)
        result.callbacks = len(deliveries)
        missing: list[Delivery] = []
        stuck: list[Delivery] = []
        for delivery in deliveries:
            seen = by_id.get(delivery.message_id, [])
            result.problems += _arrival_problems(delivery, seen)
            if any(a.verified and 200 <= a.status < 300 for a in seen):
                result.delivered += 1
            elif delivery.status == "failed":
                result.failed += 1
            else:
                missing.append(delivery)
                if delivery.status == "succeeded":
                    result.problems.append(
                        f"delivery {delivery.id} ({delivery.message_id}) is succeeded in the"
                        " database but never reached the receiver"
                    )
            if delivery.status == "pending" and self._stuck(delivery, now):
                stuck.append(delivery)
        if stuck:
            sample = ", ".join(
                f"{d.id} (attempts {d.attempt_count}, due {d.next_attempt_at:%H:%M:%S},"
                f" leased until {d.locked_until or '-'})"
                for d in stuck[:5]
                if d.next_attempt_at is not None
            )
            result.problems.append(
                f"{len(stuck)} deliveries pending past their due time plus a sweep: {sample}"
            )
            result.stuck += len(stuck)
        if missing:
            sample = ", ".join(f"{d.id}:{d.status}" for d in missing[:10])
            result.problems.append(f"{len(missing)} callbacks not delivered (id:status) {sample}")
        result.missing = len(missing) + len(never_made)
        resent = sum(len(by_id.get(d.message_id, [])) > 1 for d in deliveries)
        if resent:
            result.notes.append(f"{resent} callbacks arrived more than once, same webhook-id")

    def _stuck(self, delivery: Delivery, now: float) -> bool:
        """Pending past its due time plus a sweep (and, if leased, past the lease too)."""
        due = delivery.next_attempt_at
        if due is None:
            return True
        limit = _epoch(due)
        if delivery.locked_until is not None:
            limit = max(limit, _epoch(delivery.locked_until))
        return limit + 2 * self.sweep_seconds < now

    def _recovery(
        self, events: list[EventRow], deliveries: list[Delivery], fault_end: float
    ) -> tuple[float | None, str]:
        """Seconds from the fault's end until the work received before it was all done.

        That work is the events received until then: each processed, and each of their
        deliveries completed (succeeded or failed). None if some of it never finished. The
        text says which piece of work finished last, and how its attempts went.
        """
        before = {row.id for row in events if _epoch(row.received_at) <= fault_end}
        last, what = fault_end, "nothing was waiting"
        for row in events:
            if row.id in before:
                if row.processed_at is None:
                    return None, f"event {row.id} never processed"
                if _epoch(row.processed_at) > last:
                    last, what = _epoch(row.processed_at), f"event {row.id} processed"
        slowest: Delivery | None = None
        for delivery in deliveries:
            if delivery.event_id in before:
                if delivery.completed_at is None:
                    return None, f"delivery {delivery.id} never completed"
                if _epoch(delivery.completed_at) > last:
                    last, slowest = _epoch(delivery.completed_at), delivery
        if slowest is not None:
            what = f"delivery {slowest.id} {slowest.status}; its attempts: " + self._attempts(
                slowest.id, fault_end
            )
        return max(0.0, last - fault_end), what

    def _attempts(self, delivery_id: int, fault_end: float) -> str:
        """Return a delivery's attempts as "t=+1.2s 500, ..." (t relative to the fault's end)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    DeliveryAttempt.attempted_at, DeliveryAttempt.status_code, DeliveryAttempt.error
                )
                .where(DeliveryAttempt.delivery_id == delivery_id)
                .order_by(DeliveryAttempt.id)
            )
            return ", ".join(
                f"{_epoch(row.attempted_at) - fault_end:+.1f}s {row.status_code or row.error}"
                for row in rows
            )
