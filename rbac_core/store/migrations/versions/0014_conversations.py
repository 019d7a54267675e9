"""Customers, conversations, messages and their statuses, template updates, unknown
numbers; numbers gain their send rate, inbox channel and pause.

Also the send slots that pace each number across every sender.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("numbers") as batch:
        batch.add_column(sa.Column("send_rate", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("inbox_channel", sa.String(32), nullable=True))
        batch.add_column(sa.Column("paused_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("paused_reason", sa.String(500), nullable=True))
    _customers_and_conversations()
    _messages_and_statuses()
    _templates_and_unknown_numbers()


def _customers_and_conversations() -> None:
    op.create_table(
        "customers",
        sa.Column("id", _ID, nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("wa_id", sa.String(32), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("username", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("key", name=op.f("uq_customers_key")),
    )
    op.create_index("ix_customers_wa_id", "customers", ["wa_id"])
    op.create_table(
        "conversations",
        sa.Column("id", _ID, nullable=False),
        sa.Column("number", sa.String(16), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(32), nullable=True),
        sa.Column("last_customer_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_conversations_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("number", "customer_id", name="uq_conversations_pair"),
    )


def _messages_and_statuses() -> None:
    op.create_table(
        "wa_messages",
        sa.Column("id", _ID, nullable=False),
        sa.Column("wamid", sa.String(512), nullable=True),
        sa.Column("conversation_id", _ID, nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("reply_to", sa.String(512), nullable=True),
        sa.Column("sender", sa.String(32), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("status_rank", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_text", sa.String(500), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_wa_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wa_messages")),
        sa.UniqueConstraint("wamid", name=op.f("uq_wa_messages_wamid")),
    )
    op.create_index("ix_wa_messages_conversation_id", "wa_messages", ["conversation_id", "id"])
    op.create_table(
        "wa_statuses",
        sa.Column("wamid", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("number", sa.String(16), nullable=False),
        sa.Column("callback", sa.String(512), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_text", sa.String(500), nullable=True),
        sa.Column("billable", sa.Boolean(), nullable=True),
        sa.Column("pricing_category", sa.String(48), nullable=True),
        sa.PrimaryKeyConstraint("wamid", "status", name=op.f("pk_wa_statuses")),
    )


def _templates_and_unknown_numbers() -> None:
    op.create_table(
        "wa_template_events",
        sa.Column("id", _ID, nullable=False),
        sa.Column("waba_id", sa.String(64), nullable=False),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("previous", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wa_template_events")),
        sa.UniqueConstraint("template_id", "field", "event", "time", name="uq_wa_template_events"),
    )
    op.create_table(
        "wa_unknown_numbers",
        sa.Column("phone_number_id", sa.String(64), nullable=False),
        sa.Column("display_number", sa.String(32), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("phone_number_id", name=op.f("pk_wa_unknown_numbers")),
    )
    op.create_table(
        "send_slots",
        sa.Column("number", sa.String(16), nullable=False),
        sa.Column("next_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_send_slots")),
    )


def downgrade() -> None:
    op.drop_table("send_slots")
    op.drop_table("wa_unknown_numbers")
    op.drop_table("wa_template_events")
    op.drop_table("wa_statuses")
    op.drop_index("ix_wa_messages_conversation_id", table_name="wa_messages")
    op.drop_table("wa_messages")
    op.drop_table("conversations")
    op.drop_index("ix_customers_wa_id", table_name="customers")
    op.drop_table("customers")
    with op.batch_alter_table("numbers") as batch:
        batch.drop_column("paused_reason")
        batch.drop_column("paused_at")
        batch.drop_column("inbox_channel")
        batch.drop_column("send_rate")
