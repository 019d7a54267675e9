"""Timestamps written by the fast multi-row inserts on SQLite, in the ORM's format.

SQLite keeps a timestamp as text. The ORM writes it with its microseconds always
(`2026-12-05 11:06:41.000000`); the fast inserts (store/inserts.py) used the
generic processor, which left them out when they were zero (`2026-12-05 11:06:41`,
as every inbound message's Meta-given second is). Both read back equal, but a
comparison with an ORM-bound instant treated them as different. The inserts now
bind as the ORM does; this brings the rows they wrote before into the same format.
PostgreSQL stores timestamps as such: nothing to do there.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

WRITTEN_BY_FAST_INSERTS = {
    "wa_messages": ("sent_at", "received_at"),
    "inbound_webhooks": ("received_at", "lease_until", "next_try_at", "finished_at"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in WRITTEN_BY_FAST_INSERTS.items():
        for column in columns:
            op.execute(
                f"UPDATE {table} SET {column} = {column} || '.000000' "
                f"WHERE typeof({column}) = 'text' AND length({column}) = 19"
            )


def downgrade() -> None:
    """Nothing to undo: the longer form reads back as the same instant."""
