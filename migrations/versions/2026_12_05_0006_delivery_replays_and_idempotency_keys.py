"""delivery replays and idempotency keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 04:21:15.020123

Each revision must work with the *previous* release of the code: split breaking changes over
several deploys. Revisions never import core.models; use op.* and sa.table().

Bulk replay (SPEC 6): each replay is recorded with its `Idempotency-Key` (unique per user),
and a replayed delivery is a new row with a new `webhook-id` at the next `generation` of the
same event, webhook and sequence. Existing deliveries are generation 0, which the server
default gives them; the previous release writes no replays and leaves the column to it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_replays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("delivery_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("key_expires_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_delivery_replays_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_replays")),
        sa.UniqueConstraint("user_id", "idempotency_key", name=op.f("uq_delivery_replays_user_id")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("generation", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.drop_constraint(batch_op.f("uq_deliveries_event_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_deliveries_event_id"),
            ["event_id", "webhook_id", "meeting_sequence", "generation"],
        )


def downgrade() -> None:
    # Replayed deliveries repeat their original's key: they cannot exist in the older schema.
    op.execute(
        "UPDATE alerts SET about_delivery_id = NULL WHERE about_delivery_id IN"
        " (SELECT id FROM deliveries WHERE generation > 0)"
    )
    op.execute(
        "DELETE FROM delivery_attempts WHERE delivery_id IN"
        " (SELECT id FROM deliveries WHERE generation > 0)"
    )
    op.execute("DELETE FROM deliveries WHERE generation > 0")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_deliveries_event_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_deliveries_event_id"), ["event_id", "webhook_id", "meeting_sequence"]
        )
        batch_op.drop_column("generation")

    op.drop_table("delivery_replays")
