"""alerts and a general outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:58:28.680447

Each revision must work with the *previous* release of the code: split breaking changes over
several deploys. Revisions never import core.models; use op.* and sa.table().

Alert rules and the alerts they fire (SPEC 7), and the outbox made general: a delivery's
subject is an event or an alert (exactly one, checked), its destination a webhook or an alert
rule. Existing deliveries all have an event and keep it; the previous release still writes
event deliveries only, which pass the check.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("callback_url", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("swept_until", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "type IN ('meeting.long_running', 'meeting.no_start', 'meeting.short', 'delivery.failed', 'delivery.failing', 'webhook.disabled', 'webhook.recovered')",
            name=op.f("ck_alert_rules_type"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alert_rules_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.create_index("ix_alert_rules_user_type", ["user_id", "type"], unique=False)

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("subject_key", sa.String(length=100), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=True),
        sa.Column("about_delivery_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("fired_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["about_delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_alerts_about_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_alerts_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alerts_rule_id_alert_rules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alerts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("public_id", name=op.f("uq_alerts_public_id")),
        sa.UniqueConstraint("rule_id", "subject_key", name=op.f("uq_alerts_rule_id")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_alerts_about_delivery_id"), ["about_delivery_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_alerts_meeting_id"), ["meeting_id"], unique=False)
        batch_op.create_index("ix_alerts_user_id", ["user_id", "id"], unique=False)

    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_meetings_user_status_started", ["user_id", "status", "started_at"], unique=False
        )

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("alert_rule_id", sa.Integer(), nullable=True))
        batch_op.alter_column("event_id", existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_index(
            batch_op.f("ix_deliveries_alert_rule_id"), ["alert_rule_id"], unique=False
        )
        batch_op.create_unique_constraint(batch_op.f("uq_deliveries_alert_id"), ["alert_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_alert_id_alerts"),
            "alerts",
            ["alert_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_alert_rule_id_alert_rules"),
            "alert_rules",
            ["alert_rule_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_check_constraint("one_subject", "(event_id IS NULL) <> (alert_id IS NULL)")


def downgrade() -> None:
    # Alert deliveries have no event: they cannot exist in the older schema.
    op.execute("DELETE FROM deliveries WHERE event_id IS NULL")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_deliveries_one_subject"), type_="check")
        batch_op.drop_constraint(
            batch_op.f("fk_deliveries_alert_rule_id_alert_rules"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("fk_deliveries_alert_id_alerts"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_deliveries_alert_id"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_deliveries_alert_rule_id"))
        batch_op.alter_column("event_id", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("alert_rule_id")
        batch_op.drop_column("alert_id")

    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.drop_index("ix_meetings_user_status_started")

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_user_id")
        batch_op.drop_index(batch_op.f("ix_alerts_meeting_id"))
        batch_op.drop_index(batch_op.f("ix_alerts_about_delivery_id"))

    op.drop_table("alerts")
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_rules_user_type")

    op.drop_table("alert_rules")
