"""The outbox's live rows in id order: a claim pages through the oldest rows still to
deliver, and must not walk every delivered row (they are kept) to find them.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

LIVE = "status IN ('queued', 'running')"  # as rbac_core/store/models/bookkeeping.py


def upgrade() -> None:
    op.create_index(
        "ix_outbox_live", "outbox", ["id"], sqlite_where=text(LIVE), postgresql_where=text(LIVE)
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_live", table_name="outbox")
