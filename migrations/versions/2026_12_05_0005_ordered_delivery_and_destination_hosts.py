"""ordered delivery and destination hosts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 04:30:00.000000

Each revision must work with the *previous* release of the code: split breaking changes over
several deploys. Revisions never import core.models; use op.* and sa.table().

Issue 13: a webhook says whether its deliveries wait for the earlier ones of their meeting
(`ordered`, true for existing webhooks, as for new ones); a delivery carries that flag and its
callback host (`destination_host`, `host:port`), which the per-host bound counts leases by.
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

PENDING = sa.text("status = 'pending'")
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
        batch_op.create_index(
            "ix_deliveries_pending_meeting",
            ["meeting_id", "meeting_sequence"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
        batch_op.create_index(
            "ix_deliveries_pending_host",
            ["destination_host", "locked_until"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
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
        batch_op.drop_index("ix_deliveries_pending_host", sqlite_where=PENDING)
        batch_op.drop_index("ix_deliveries_pending_meeting", sqlite_where=PENDING)
        batch_op.drop_column("ordered")
        batch_op.drop_column("destination_host")
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("ordered")
