"""backfill deliveries.meeting_sequence from their bodies

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:40:00.000000

Each revision must work with the *previous* release of the code: split breaking changes over
several deploys. Revisions never import core.models; use op.* and sa.table().

Rows made before 0002 hold 0; their body's `data.sequence` (callback_body() always writes it)
is the real value. Only rows still at 0 are touched, so a re-run or a row the new code wrote
is left as it is.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        sequence = "CAST(CAST(body AS json) -> 'data' ->> 'sequence' AS INTEGER)"
    else:
        sequence = "CAST(json_extract(body, '$.data.sequence') AS INTEGER)"
    op.execute(
        f"UPDATE deliveries SET meeting_sequence = COALESCE({sequence}, 0)"  # noqa: S608  (constant SQL)
        " WHERE meeting_sequence = 0"
    )


def downgrade() -> None:
    # The values are true at 0002 too; setting them back to 0 could collide on the unique key
    # (event, webhook, sequence) for callbacks the new code sent again.
    pass
