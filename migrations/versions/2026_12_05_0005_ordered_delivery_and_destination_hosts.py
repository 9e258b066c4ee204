"""ordered delivery and destination hosts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 04:30:00.000000

Each revision must work with the *previous* release of the code: split breaking changes over
several deploys. Revisions never import core.models; use op.* and sa.table().

Issue 13: a webhook says whether its deliveries wait for the earlier ones of their meeting
(`ordered`, true for existing webhooks, as for new ones); a delivery carries that flag and its
callback host (`destination_host`, `host:port`), which the per-host bound counts leases by;
`host_slots` holds each host's sending slots (PostgreSQL's exact bound), made when first needed.
Existing callbacks are ordered and get their host from their URL; existing alerts are not
ordered. The previous release writes deliveries without either column: unordered, and host ''
(which the bound leaves alone), so it delivers as it did.
"""

from __future__ import annotations

import urllib.parse

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DEFAULT_PORTS = {"http": 80, "https": 443}
BATCH = 1000


def _host(url: str) -> str:
    # A copy of outbound_http.destination_host as of this revision: revisions never import core.
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        return ""
    host = (parts.hostname or "").lower()
    return f"{host}:{port}" if host else ""


def upgrade() -> None:
    op.create_table(
        "host_slots",
        sa.Column("host", sa.String(length=300), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("host", "slot", name=op.f("pk_host_slots")),
    )
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ordered", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "destination_host",
                sa.String(length=300),
                server_default=sa.text("''"),
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("ordered", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        # The claim's order, whole: the pick then stops at the first claimable row.
        batch_op.drop_index("ix_deliveries_due")
        batch_op.create_index(
            "ix_deliveries_due", ["status", "next_attempt_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_meeting_sequence", ["meeting_id", "meeting_sequence"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_host_lease", ["destination_host", "locked_until"], unique=False
        )
    op.execute("UPDATE deliveries SET ordered = true WHERE event_id IS NOT NULL")
    deliveries = sa.table(
        "deliveries", sa.column("id"), sa.column("callback_url"), sa.column("destination_host")
    )
    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(
            sa.select(deliveries.c.id, deliveries.c.callback_url)
            .where(deliveries.c.id > after)
            .order_by(deliveries.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        bind.execute(
            deliveries.update()
            .where(deliveries.c.id == sa.bindparam("row_id"))
            .values(destination_host=sa.bindparam("host")),
            [{"row_id": row.id, "host": _host(row.callback_url)} for row in rows],
        )
        after = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_host_lease")
        batch_op.drop_index("ix_deliveries_meeting_sequence")
        batch_op.drop_index("ix_deliveries_due")
        batch_op.create_index("ix_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch_op.drop_column("ordered")
        batch_op.drop_column("destination_host")
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("ordered")
    op.drop_table("host_slots")
