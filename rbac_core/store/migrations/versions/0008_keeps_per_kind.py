"""A "Keep 30 days" silences one kind of finding, not every kind.

Keeping someone's access while they are inactive must not hide it when they
are deactivated or lose the 2FA their role needs. Existing keeps were all made
on inactive findings or the like; they are kept as "inactive".

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_keeps", schema=None, recreate="always") as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="inactive")
        )
        batch_op.drop_constraint("pk_review_keeps", type_="primary")
        batch_op.create_primary_key("pk_review_keeps", ["grant_id", "kind"])


def downgrade() -> None:
    with op.batch_alter_table("review_keeps", schema=None, recreate="always") as batch_op:
        batch_op.drop_constraint("pk_review_keeps", type_="primary")
        batch_op.drop_column("kind")
        batch_op.create_primary_key("pk_review_keeps", ["grant_id"])
