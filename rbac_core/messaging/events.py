"""Meta's webhook notifications as typed events (read from payloads by `parsing.py`).

The events carry what processing needs, named as WhatsApp names it, plus the
untouched `raw` item: the dedup keys (a message's `wamid`; a status's `wamid` and
status; a template event's id, event and time) and the number it came through
(`metadata.phone_number_id`, the routing key). Identity follows the late-2026
shape: a business-scoped `user_id` when Meta sends one, `wa_id` otherwise, and
either may be empty for people who adopted a username.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Raw = Mapping[str, Any]


STATUS_ORDER = {"sent": 1, "delivered": 2, "read": 3, "played": 4}
"""Statuses only move forward; `failed` is final whatever came before."""


@dataclass(frozen=True)
class Contact:
    """The person behind a message, as the change's `contacts[]` names them."""

    wa_id: str
    user_id: str
    name: str
    username: str


@dataclass(frozen=True)
class MetaError:
    code: int | None
    title: str
    message: str
    details: str


@dataclass(frozen=True)
class Event:
    """What every event has: where it came from, and the item as Meta sent it."""

    change: str
    """The change's `field` (messages, message_template_status_update, …)."""
    waba_id: str
    raw: Raw = field(repr=False)


@dataclass(frozen=True)
class NumberEvent(Event):
    """An event about one business number (messages and statuses)."""

    phone_number_id: str
    display_phone_number: str


@dataclass(frozen=True)
class Message(NumberEvent):
    """An inbound message. `kind` is Meta's `type`; `content` its typed part (below)."""

    wamid: str
    timestamp: int
    kind: str
    sender: Contact
    content: Any
    context_wamid: str
    """The message this one replies to, if any."""
    errors: tuple[MetaError, ...] = ()


@dataclass(frozen=True)
class Text:
    body: str


@dataclass(frozen=True)
class Media:
    media_id: str
    mime_type: str
    sha256: str
    caption: str
    filename: str


@dataclass(frozen=True)
class Location:
    latitude: float | None
    longitude: float | None
    name: str
    address: str


@dataclass(frozen=True)
class SharedContacts:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Reaction:
    message_wamid: str
    emoji: str
    """Empty when the customer took their reaction back."""


@dataclass(frozen=True)
class Reply:
    """An interactive answer: a reply button or a list row (`kind`), or a template's
    quick-reply button (`kind` "button", with its payload as `reply_id`)."""

    kind: str
    reply_id: str
    title: str
    description: str


@dataclass(frozen=True)
class SystemChange:
    """`user_changed_number` / `user_changed_user_id`: the customer's identity moved."""

    kind: str
    body: str
    new_wa_id: str
    new_user_id: str


@dataclass(frozen=True)
class Status(NumberEvent):
    """What became of a message we sent."""

    wamid: str
    status: str
    timestamp: int
    recipient_id: str
    recipient_user_id: str
    callback: str
    """`biz_opaque_callback_data`: the outbox id we sent it with."""
    billable: bool | None
    pricing_category: str
    errors: tuple[MetaError, ...] = ()

    def rank(self) -> int:
        """Its place in sent < delivered < read < played; failed outranks them all."""
        return 99 if self.status == "failed" else STATUS_ORDER.get(self.status, 0)


@dataclass(frozen=True)
class TemplateUpdate(Event):
    """A template's review, quality or category changed (`field` says which)."""

    template_id: str
    name: str
    language: str
    event: str
    """Status updates: APPROVED, REJECTED, PAUSED, …; quality: the new score; category:
    the new category."""
    previous: str
    reason: str
    time: int
    """The entry's `time`: with the id and the event, what makes an update unique (a
    template paused, reinstated and paused again is three updates)."""


@dataclass(frozen=True)
class NumberQualityUpdate(Event):
    display_phone_number: str
    event: str
    limit: str


@dataclass(frozen=True)
class AccountNotice(Event):
    """`account_alerts` and `account_update`: posted to the alert channel."""

    event: str
    severity: str
    description: str


@dataclass(frozen=True)
class ChangeErrors(NumberEvent):
    """Errors Meta reported for a whole change (`value.errors`) with nothing else in it."""

    errors: tuple[MetaError, ...]


@dataclass(frozen=True)
class Unknown(Event):
    """A kind of change this version does not handle: kept, never an error."""


@dataclass(frozen=True)
class Malformed(Event):
    """An item too broken to act on (no id, say): recorded and left alone."""

    why: str
