"""Policy changes: which users each policy version touched, for partial reloads.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_changes",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("users", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_policy_changes")),
    )


def downgrade() -> None:
    op.drop_table("policy_changes")
