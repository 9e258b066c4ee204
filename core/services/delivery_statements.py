"""The delivery hot path's SQL: a claim, its attempt row, a success, each one statement.

A claim is one UPDATE ... RETURNING that picks a claimable delivery (FOR NO KEY UPDATE SKIP
LOCKED on PostgreSQL, the write lock of BEGIN IMMEDIATE on SQLite), leases it and brings back all
that `outbound_http.send` needs; on PostgreSQL the INSERT of its attempt row rides in the same
statement (DML in WITH). A success is one UPDATE of the delivery fenced by its lease, with the
attempt row's UPDATE in its WITH on PostgreSQL. `delivery_states` runs them and decides what they
mean; the attempt log's words for an attempt that did not end normally live here too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import sqlalchemy as sa

from core.db import UTCDateTime
from core.models import Delivery, DeliveryAttempt, User, Webhook
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


def claimable(
    candidate: sa.FromClause, now: sa.BindParameter[dt.datetime]
) -> sa.ColumnElement[bool]:
    """Say in SQL whether a row of `candidate` (an alias of deliveries) may be claimed now.

    Due, not leased, and its owner is there to sign it (a user's deletion takes their
    deliveries with it). The pick and `more_due` both ask this, so a rule about which
    delivery may go next (such as one that holds a delivery back while an earlier one of the
    same meeting and URL is pending: another NOT EXISTS here) is written once.
    """
    return sa.and_(
        _due(candidate, now),
        sa.exists().where(_users.c.id == candidate.c.user_id),
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
    pick = sa.select(candidate.c.id).where(claimable(candidate, now))
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
            of_user(_users.c.signing_secret).label("secret"),
            of_user(_users.c.previous_signing_secret).label("previous_secret"),
            of_user(_users.c.previous_secret_valid_until).label("previous_valid_until"),
            # The raw column: SQLite 3.40 can answer `IS NOT NULL` wrongly inside RETURNING.
            sa.select(_webhooks.c.disabled_at)
            .where(_webhooks.c.id == outer_row(d.c.webhook_id))
            .scalar_subquery()
            .label("webhook_disabled_at"),
            sa.exists()
            .where(claimable(other, now), other.c.id != outer_row(d.c.id))
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
    .returning(*alert_triggers.success_columns(_deliveries))
)
# PostgreSQL: the attempt row's UPDATE rides along in the same statement (DML in WITH).
SUCCEED_AND_LOG = SUCCEED.add_cte(RECORD_ATTEMPT.cte("logged"))
