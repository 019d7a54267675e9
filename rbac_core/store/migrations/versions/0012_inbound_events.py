"""`deliveries` becomes `inbound_events`: WhatsApp delivery statuses are coming.

The table holds inbound events already taken in (Slack's Events API retries,
Meta's webhook retries), so a retry runs once. "Deliveries" will mean what
Meta says about messages we send; the old name would collide with it.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _rename(old: str, new: str) -> None:
    op.drop_index(f"ix_{old}_received_at", table_name=old)
    op.rename_table(old, new)
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {new} RENAME CONSTRAINT pk_{old} TO pk_{new}")
    op.create_index(f"ix_{new}_received_at", new, ["received_at"])


def upgrade() -> None:
    _rename("deliveries", "inbound_events")


def downgrade() -> None:
    _rename("inbound_events", "deliveries")
