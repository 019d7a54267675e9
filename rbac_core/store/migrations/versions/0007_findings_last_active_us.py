"""Review findings keep the last activity as microseconds, as `user_activity` does.

The findings are now computed by one INSERT ... SELECT in the database, which
copies the rolled-up value as it is instead of converting it per dialect.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_findings", schema=None) as batch_op:
        batch_op.drop_column("last_active_at")
        batch_op.add_column(sa.Column("last_active_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_findings", schema=None) as batch_op:
        batch_op.drop_column("last_active_us")
        batch_op.add_column(sa.Column("last_active_at", sa.DateTime(), nullable=True))
