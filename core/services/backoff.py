"""Sweep back-off: each re-sent wake-up doubles the wait before the next one, up to a cap.

The inbox sweep (events) and the delivery sweep share it. A message that is only slow (a long
queue backlog) is not copied again every sweep, and a lost one is still re-sent within the cap.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.orm import QueryableAttribute


def resend_waits(first: dt.timedelta, cap: dt.timedelta) -> list[dt.timedelta]:
    """Return the wait before re-send k+1 (k = re-sends so far): `first`, doubling, capped."""
    if first <= dt.timedelta(0):
        raise ValueError(f"the first wait must be positive, not {first}")
    waits = [first]
    while waits[-1] < cap:
        waits.append(min(waits[-1] * 2, cap))
    return waits


def resend_due(
    count: QueryableAttribute[int],
    last_sent: sa.ColumnElement[dt.datetime] | QueryableAttribute[dt.datetime | None],
    *,
    now: dt.datetime,
    first: dt.timedelta,
    cap: dt.timedelta,
) -> sa.ColumnElement[bool]:
    """Return the condition "re-send now": `last_sent` is `resend_waits[count]` old or older."""
    waits = resend_waits(first, cap)
    # One bound cutoff per re-send count: portable SQL, no date arithmetic in the database.
    return sa.or_(
        *(sa.and_(count == k, last_sent <= now - wait) for k, wait in enumerate(waits[:-1])),
        sa.and_(count >= len(waits) - 1, last_sent <= now - waits[-1]),
    )
