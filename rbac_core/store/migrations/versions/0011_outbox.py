"""The outbox: what actions tell people outside the database, delivered by workers.

`outbox` rows are written in the gate's transaction and delivered at least
once under a lease; `outbox_pace` paces deliveries per destination across
every worker. Workers look for due rows by (status, next_try_at).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("to", sa.String(160), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("next_try_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index("ix_outbox_status_next_try_at", "outbox", ["status", "next_try_at"])
    op.create_table(
        "outbox_pace",
        sa.Column("to", sa.String(160), nullable=False),
        sa.Column("next_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("to", name=op.f("pk_outbox_pace")),
    )


def downgrade() -> None:
    op.drop_table("outbox_pace")
    op.drop_index("ix_outbox_status_next_try_at", table_name="outbox")
    op.drop_table("outbox")
