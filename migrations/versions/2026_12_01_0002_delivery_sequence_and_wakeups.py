"""delivery meeting sequence and wake-up count

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 19:50:00.000000

Each revision must work with the *previous* release of the code: split breaking changes over
several deploys. Revisions never import core.models; use op.* and sa.table().

`deliveries.meeting_sequence` is the `data.sequence` a delivery's body carries, and joins the
unique key: an event's callback may be sent again at a later sequence when a late event corrects
what it said. Existing rows get 0 here and their real value in 0003 (a backfill is a revision of
its own); the previous release, which does not know the column, keeps inserting with 0 until
the new code runs, and never makes two deliveries of one event to one webhook.
`deliveries.enqueue_count` counts the sweep's re-sent wake-ups, so the sweep can back off.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("meeting_sequence", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("enqueue_count", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.drop_constraint("uq_deliveries_event_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_deliveries_event_id", ["event_id", "webhook_id", "meeting_sequence"]
        )


def downgrade() -> None:
    # Keep the first delivery of each (event, webhook): the old key allows only one.
    op.execute(
        "DELETE FROM deliveries WHERE id NOT IN "
        "(SELECT MIN(id) FROM deliveries GROUP BY event_id, webhook_id)"
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("uq_deliveries_event_id", type_="unique")
        batch_op.create_unique_constraint("uq_deliveries_event_id", ["event_id", "webhook_id"])
        batch_op.drop_column("enqueue_count")
        batch_op.drop_column("meeting_sequence")
