"""The delivery hot path's SQL: a claim, its attempt row, a success, each one statement.

A claim is one UPDATE ... RETURNING that picks a claimable delivery (FOR NO KEY UPDATE SKIP
LOCKED on PostgreSQL, the write lock of BEGIN IMMEDIATE on SQLite), leases it and brings back all
that `outbound_http.send` needs; on PostgreSQL the INSERT of its attempt row rides in the same
statement (DML in WITH). A success is one UPDATE of the delivery fenced by its lease, with the
attempt row's UPDATE in its WITH on PostgreSQL. `delivery_states` runs them and decides what they
mean; the attempt log's words for an attempt that did not end normally live here too. Which
delivery may go is `claimable`: due, in order within its meeting and URL, and within its host's
bound (issue 13); on PostgreSQL a claim also takes one of its host's slot rows (`TAKE_SLOT`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.selectable import NamedFromClause

from core.db import UTCDateTime
from core.models import Delivery, DeliveryAttempt, HostSlot, User, Webhook
from core.services import alert_triggers

# An attempt's `error` while it runs; at the next claim, one whose worker died; not sent at all.
IN_PROGRESS = "in-progress"
INTERRUPTED = "interrupted"
WEBHOOK_DISABLED = "webhook-disabled"

# The tables behind the models, for Core statements (declarative types them as FromClause).
_deliveries = cast("sa.Table", Delivery.__table__)
_attempts = cast("sa.Table", DeliveryAttempt.__table__)
_users = cast("sa.Table", User.__table__)
_webhooks = cast("sa.Table", Webhook.__table__)


def _due(table: sa.FromClause, now: sa.BindParameter[dt.datetime]) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.status == "pending",
        table.c.next_attempt_at <= now,
        sa.or_(table.c.locked_until.is_(None), table.c.locked_until <= now),
    )


def eligible(
    candidate: sa.FromClause, now: sa.BindParameter[dt.datetime]
) -> sa.ColumnElement[bool]:
    """Say in SQL whether a row of `candidate` is due, not leased, and its owner is there.

    (A user's deletion takes their deliveries with it.) `more_due` asks only this: it may
    then say yes for a delivery that waits (for an earlier one, or for its host), and a lane
    started for it finds nothing and stops; asking `claimable` there cost every claim the
    planning of its subqueries twice.
    """
    return sa.and_(
        _due(candidate, now),
        sa.exists().where(_users.c.id == candidate.c.user_id),
    )


def claimable(
    candidate: NamedFromClause, now: sa.BindParameter[dt.datetime]
) -> sa.ColumnElement[bool]:
    """Say in SQL whether a row of `candidate` (an alias of deliveries) may be claimed now.

    `eligible`, not behind an earlier delivery of its meeting to its URL (`ordered`), and its
    host has a free slot (fewer than `:max_in_flight` live leases). The rule about which
    delivery may go next is written here once.
    """
    return sa.and_(
        eligible(candidate, now),
        sa.or_(candidate.c.ordered == sa.false(), ~sa.exists(ahead_of(candidate))),
        sa.or_(
            candidate.c.destination_host == "",
            in_flight_to_host(candidate, now) < sa.bindparam("max_in_flight", type_=sa.Integer()),
        ),
    )


def _of(candidate: NamedFromClause, column: str) -> sa.ColumnElement[Any]:
    """Refer to `candidate`'s column from a subquery nested in it, with its name written out.

    SQLAlchemy's SQLite compiler drops the table name of every column inside an UPDATE's
    RETURNING clause, subqueries included, where `meeting_id` would then mean the innermost
    table's own column: written out, `claimable` holds wherever it is asked.
    """
    return sa.literal_column(f"{candidate.name}.{column}", type_=candidate.c[column].type)


def ahead_of(candidate: NamedFromClause) -> sa.Select[Any]:
    """Select the pending callbacks `candidate` waits for (when it is `ordered`).

    Those of the same meeting to the same URL that come before it by the meeting's sequence
    (then by id): the order the service learned what it sends, so that a correction, made at
    a higher sequence, goes after what it corrects (docs/DECISIONS.md, "Ordered delivery").
    """
    earlier = _deliveries.alias(f"{candidate.name}_earlier")
    sequence = _of(candidate, "meeting_sequence")
    return sa.select(earlier.c.id).where(
        earlier.c.meeting_id == _of(candidate, "meeting_id"),
        earlier.c.callback_url == _of(candidate, "callback_url"),
        earlier.c.status == "pending",
        earlier.c.event_id.is_not(None),
        sa.or_(
            earlier.c.meeting_sequence < sequence,
            sa.and_(earlier.c.meeting_sequence == sequence, earlier.c.id < _of(candidate, "id")),
        ),
    )


def in_flight_to_host(
    candidate: NamedFromClause, now: sa.BindParameter[dt.datetime]
) -> sa.ScalarSelect[int]:
    """Count the live leases (attempts in flight) to `candidate`'s destination host."""
    busy = _deliveries.alias(f"{candidate.name}_busy")
    return (
        sa.select(sa.func.count())
        .select_from(busy)
        .where(
            busy.c.destination_host == _of(candidate, "destination_host"),
            busy.c.status == "pending",
            busy.c.locked_until > now,
        )
        .scalar_subquery()
    )


def outer_row(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """Refer to the updated row's `column` from a subquery of an UPDATE's RETURNING clause.

    Written out as `table.column`: SQLAlchemy's SQLite compiler drops the table name of every
    column inside RETURNING, subqueries included, where `id` would then mean the subquery's
    own table's `id`.
    """
    return sa.literal_column(f"{column.table.name}.{column.name}", type_=column.type)


def _claim_statement(*, named: bool) -> sa.Update:
    """UPDATE the oldest due delivery (of `:among` when `named`) into a lease; RETURNING all.

    The pick is a subquery FOR NO KEY UPDATE SKIP LOCKED: a row another transaction holds is
    left to it instead of waited for, so the lease's clock (read just before) never includes
    a wait. Nearly every transaction that locks a delivery row takes it (a claim), ends it or
    reschedules it (a record), or sends a wake-up of its own once it commits (the sweep, a
    redelivery); the rest (a webhook's deletion setting `webhook_id` to NULL) leave it to the
    sweep, which wakes a due delivery again a lease after its last wake-up. So a skipped
    delivery is never stranded. The outer WHERE says "due" again. SQLite renders no row lock:
    its write lock, taken at BEGIN IMMEDIATE before the clock is read, serializes claims.
    """
    now = sa.bindparam("now", type_=UTCDateTime())
    candidate = _deliveries.alias("candidate")
    pick = sa.select(candidate.c.id).where(
        claimable(candidate, now),
        # Hosts this claim found full after all (no slot free on PostgreSQL, `claim_next`).
        candidate.c.destination_host.not_in(sa.bindparam("skip_hosts", expanding=True)),
    )
    if named:
        pick = pick.where(candidate.c.id.in_(sa.bindparam("among", expanding=True)))
    picked = (
        pick.order_by(candidate.c.next_attempt_at, candidate.c.id)
        .limit(1)
        # FOR NO KEY UPDATE, as the UPDATE itself locks: an attempt or alert row being
        # inserted with a foreign key to it (KEY SHARE) does not make the claim skip it.
        .with_for_update(skip_locked=True, key_share=True)
        .scalar_subquery()
    )
    d = _deliveries
    other = _deliveries.alias("other")

    def of_user(column: sa.Column[Any]) -> sa.ScalarSelect[Any]:
        return sa.select(column).where(_users.c.id == outer_row(d.c.user_id)).scalar_subquery()

    return (
        sa.update(d)
        .where(d.c.id == picked, _due(d, now))
        .values(
            attempt_count=d.c.attempt_count + 1,
            locked_until=sa.bindparam("lease", type_=UTCDateTime()),
            # Its wake-up arrived: the sweep's back-off starts over.
            enqueue_count=0,
            # Written out: the column's Python-side onupdate does not reach an UPDATE that
            # runs inside the WITH of another statement (PostgreSQL's claim).
            updated_at=now,
        )
        .returning(
            d.c.id,
            d.c.message_id,
            d.c.callback_url,
            d.c.body,
            d.c.attempt_count,
            d.c.locked_until,
            d.c.destination_host,
            of_user(_users.c.signing_secret).label("secret"),
            of_user(_users.c.previous_signing_secret).label("previous_secret"),
            of_user(_users.c.previous_secret_valid_until).label("previous_valid_until"),
            # The raw column: SQLite 3.40 can answer `IS NOT NULL` wrongly inside RETURNING.
            sa.select(_webhooks.c.disabled_at)
            .where(_webhooks.c.id == outer_row(d.c.webhook_id))
            .scalar_subquery()
            .label("webhook_disabled_at"),
            sa.exists()
            .where(eligible(other, now), other.c.id != outer_row(d.c.id))
            .label("more_due"),
            # An attempt still in progress at the next claim is one whose worker died.
            sa.exists()
            .where(_attempts.c.delivery_id == outer_row(d.c.id), _attempts.c.error == IN_PROGRESS)
            .label("interrupted"),
        )
    )


CLAIM_NAMED = _claim_statement(named=True)
CLAIM_ANY = _claim_statement(named=False)
OPEN_ATTEMPT = (
    sa.insert(_attempts)
    .values(
        delivery_id=sa.bindparam("claimed_id"),
        attempted_at=sa.bindparam("now", type_=UTCDateTime()),
        error=IN_PROGRESS,
    )
    .returning(_attempts.c.id)
)
MARK_INTERRUPTED = (
    sa.update(_attempts)
    .where(
        _attempts.c.delivery_id == sa.bindparam("claimed_id"),
        _attempts.c.error == IN_PROGRESS,
        # Not the claim's own attempt, when the same statement opened it (PostgreSQL).
        sa.or_(
            sa.bindparam("opened", type_=sa.Integer()).is_(None),
            _attempts.c.id != sa.bindparam("opened", type_=sa.Integer()),
        ),
    )
    .values(error=INTERRUPTED)
)
DROP_ATTEMPT = sa.delete(_attempts).where(_attempts.c.id == sa.bindparam("opened"))
NOT_SENT = (
    sa.update(_attempts)
    .where(_attempts.c.id == sa.bindparam("opened"))
    .values(error=WEBHOOK_DISABLED)
)


def _claim_and_open(*, named: bool) -> sa.Select[Any]:
    """The claim and its attempt row's INSERT in one statement (PostgreSQL: DML in WITH)."""
    claimed = _claim_statement(named=named).cte("claimed")
    opened = (
        sa.insert(_attempts)
        .from_select(
            ["delivery_id", "attempted_at", "error"],
            sa.select(
                claimed.c.id, sa.bindparam("now", type_=UTCDateTime()), sa.literal(IN_PROGRESS)
            ),
        )
        .returning(_attempts.c.id, _attempts.c.delivery_id)
        .cte("opened")
    )
    return sa.select(claimed, opened.c.id.label("attempt_id")).join_from(
        claimed, opened, opened.c.delivery_id == claimed.c.id
    )


# One round trip per claim on PostgreSQL; SQLite has no DML in WITH: two statements there.
CLAIM_AND_OPEN_NAMED = _claim_and_open(named=True)
CLAIM_AND_OPEN_ANY = _claim_and_open(named=False)


RECORD_ATTEMPT = (
    sa.update(_attempts)
    .where(_attempts.c.id == sa.bindparam("attempt"))
    .values(
        status_code=sa.bindparam("code"),
        latency_ms=sa.bindparam("latency"),
        error=sa.bindparam("failure"),
        response_body=sa.bindparam("answer"),
    )
)


def next_in_line(ended: sa.Table) -> sa.ScalarSelect[int]:
    """The first pending callback of the ended delivery's meeting to its URL: wake it now.

    Written for an UPDATE's RETURNING (`outer_row`); an alert (no event) has no line.
    """
    following = _deliveries.alias("following")
    return (
        sa.select(following.c.id)
        .where(
            following.c.meeting_id == outer_row(ended.c.meeting_id),
            following.c.callback_url == outer_row(ended.c.callback_url),
            following.c.status == "pending",
            following.c.event_id.is_not(None),
            following.c.id != outer_row(ended.c.id),
            outer_row(ended.c.event_id).is_not(None),
        )
        .order_by(following.c.meeting_sequence, following.c.id)
        .limit(1)
        .scalar_subquery()
    )


# The per-host bound on PostgreSQL (see `delivery_states.claim_next`): a claim also takes one
# of its host's slots, SKIP LOCKED, so two claims never take the same one and never wait.
_slots = cast("sa.Table", HostSlot.__table__)
_slot_holder = _deliveries.alias("holder")
TAKE_SLOT = (
    sa.update(_slots)
    .where(
        _slots.c.host == sa.bindparam("slot_host"),
        _slots.c.slot
        == (
            sa.select(_slots.c.slot)
            .where(
                _slots.c.host == sa.bindparam("slot_host"),
                _slots.c.slot <= sa.bindparam("max_in_flight", type_=sa.Integer()),
                # Free unless the delivery it names still holds the lease it names.
                ~sa.exists().where(
                    _slot_holder.c.id == _slots.c.delivery_id,
                    _slot_holder.c.locked_until == _slots.c.locked_until,
                    _slot_holder.c.locked_until > sa.bindparam("now", type_=UTCDateTime()),
                ),
            )
            .order_by(_slots.c.slot)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        ),
    )
    .values(
        delivery_id=sa.bindparam("claimed_id"),
        locked_until=sa.bindparam("lease", type_=UTCDateTime()),
    )
    .returning(_slots.c.slot)
)


def add_slots(host: str, count: int) -> sa.Insert:
    """Give a host its slots 1..count (those it has stay as they are)."""
    return (
        postgresql.insert(_slots)
        .values([{"host": host, "slot": slot} for slot in range(1, count + 1)])
        .on_conflict_do_nothing()
    )


UNCLAIM = (
    sa.update(_deliveries)
    .where(_deliveries.c.id == sa.bindparam("claimed_id"))
    .values(attempt_count=_deliveries.c.attempt_count - 1, locked_until=None)
)
# A 429 or 503 slows its host: the host's other waiting deliveries wait as long as it does.
HOLD_HOST = (
    sa.update(_deliveries)
    .where(
        _deliveries.c.destination_host == sa.bindparam("host"),
        _deliveries.c.destination_host != "",
        _deliveries.c.status == "pending",
        _deliveries.c.next_attempt_at < sa.bindparam("until", type_=UTCDateTime()),
        sa.or_(
            _deliveries.c.locked_until.is_(None),
            _deliveries.c.locked_until <= sa.bindparam("now", type_=UTCDateTime()),
        ),
    )
    .values(next_attempt_at=sa.bindparam("until", type_=UTCDateTime()), enqueue_count=0)
)


SUCCEED = (
    sa.update(_deliveries)
    .where(
        # Named apart from every column of both tables: at execution SQLAlchemy would add an
        # UPDATE's unknown parameter named like one of its columns to its SET clause.
        _deliveries.c.id == sa.bindparam("ended"),
        # Fenced by the lease: a worker that outlived it changes nothing.
        _deliveries.c.locked_until == sa.bindparam("lease", type_=UTCDateTime()),
    )
    .values(
        status="succeeded",
        completed_at=sa.bindparam("now", type_=UTCDateTime()),
        next_attempt_at=None,
        locked_until=None,
        # Written out: the Python-side onupdate is not applied to a statement with a WITH.
        updated_at=sa.bindparam("now", type_=UTCDateTime()),
    )
    .returning(
        *alert_triggers.success_columns(_deliveries),
        next_in_line(_deliveries).label("next_in_line"),
    )
)
# PostgreSQL: the attempt row's UPDATE rides along in the same statement (DML in WITH).
SUCCEED_AND_LOG = SUCCEED.add_cte(RECORD_ATTEMPT.cte("logged"))
