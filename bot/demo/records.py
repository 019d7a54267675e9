"""What the product recorded, read back for the narration and its checks.

No surface shows conversations or a message's delivery state yet (`/wa-conv`
comes later), so the demo reads the records themselves, read-only: what it
says about a conversation's window or a message's status is then what the
product stored, not what the demo expected it to store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from rbac_core import Database
from rbac_core.messaging.people import WINDOW
from rbac_core.store.models import Conversation, ConversationMessage, Customer, MessageStatus


@dataclass(frozen=True)
class ConversationSeen:
    id: int
    number: str
    state: str
    customer_name: str | None
    last_customer_at: datetime | None
    messages_in: int

    @property
    def name(self) -> str:
        return f"C-{self.id}"

    @property
    def window_closes(self) -> datetime | None:
        return None if self.last_customer_at is None else self.last_customer_at + WINDOW


@dataclass(frozen=True)
class MessageSeen:
    id: int
    conversation: int
    kind: str
    status: str | None
    wamid: str | None
    error_code: int | None
    statuses: tuple[str, ...]
    """Every status Meta reported for it, in the order they happened."""


def conversation_with(db: Database, business: str, customer: str) -> ConversationSeen | None:
    """The conversation of `business` with the customer whose number is `customer`."""
    with db.read() as session:
        row = session.execute(
            select(Conversation, Customer.name)
            .join(Customer, Customer.id == Conversation.customer_id)
            .where(Conversation.number == business, Customer.wa_id == customer.lstrip("+"))
        ).first()
        if row is None:
            return None
        conversation, name = row
        inbound = session.scalars(
            select(ConversationMessage.id).where(
                ConversationMessage.conversation_id == conversation.id,
                ConversationMessage.direction == "in",
            )
        ).all()
        return ConversationSeen(
            conversation.id,
            conversation.number,
            conversation.state,
            name,
            conversation.last_customer_at,
            len(inbound),
        )


def message(db: Database, message_id: int) -> MessageSeen | None:
    with db.read() as session:
        found = session.get(ConversationMessage, message_id)
        if found is None:
            return None
        statuses: tuple[str, ...] = ()
        if found.wamid is not None:
            statuses = tuple(
                session.scalars(
                    select(MessageStatus.status)
                    .where(MessageStatus.wamid == found.wamid)
                    .order_by(MessageStatus.at)
                ).all()
            )
        return MessageSeen(
            found.id,
            found.conversation_id,
            found.kind,
            found.status,
            found.wamid,
            found.error_code,
            statuses,
        )
