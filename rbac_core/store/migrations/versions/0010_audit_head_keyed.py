"""The audit head remembers whether the chain is keyed; job claims are found by status.

Once an entry is hashed under the chain key, a process without that key must
not append: its plain entries would make the log look tampered for good.
Appends read the head row anyway, so the flag costs nothing to check.

Every scheduler look reads a job's unfinished claims (running or failed): an
index on (job, status) keeps that a lookup as `job_runs` grows (a minutely
schedule adds 1,440 rows a day).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(
            sa.Column("keyed", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
    op.create_index("ix_job_runs_job_status", "job_runs", ["job", "status"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_job_status", table_name="job_runs")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("keyed")
