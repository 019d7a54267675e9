"""Reading Meta's notifications into events: every one of them, never only the first.

One POST batches entries, each entry changes, each change messages and statuses
(up to 1,000 updates): `events_of` walks all of them and yields one event per
message, status or other update, in the order Meta listed them. Reading never
raises on what Meta sends: a field it does not know is kept in `raw` and
ignored; an item too broken to use becomes `Malformed` (recorded, not processed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from rbac_core.messaging.events import (
    AccountNotice,
    ChangeErrors,
    Contact,
    Event,
    Location,
    Malformed,
    Media,
    Message,
    MetaError,
    NumberQualityUpdate,
    Raw,
    Reaction,
    Reply,
    SharedContacts,
    Status,
    SystemChange,
    TemplateUpdate,
    Text,
    Unknown,
)

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})


# -- reading loose values -----------------------------------------------------------------


ID_MAX = 512
"""Longer ids are not Meta's (a wamid is about 60 characters): such items are Malformed,
never cut to a prefix that another id could share."""
TIME_MAX = 2**40  # seconds: far past any real moment, far below what overflows a database


def _text(value: object, limit: int = 4096) -> str:
    """Text as it can be stored: cut to `limit`, NUL and lone surrogates replaced (the
    door keeps bodies that hold them, rather than refusing a whole signed batch)."""
    if not isinstance(value, str):
        return ""
    text = value[:limit]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _id(value: object) -> str:
    """An id Meta sends as text or, for templates and some accounts, as a number; "" for
    anything else or longer than ID_MAX."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value) if value.bit_length() <= 4 * ID_MAX else ""  # digits, then cut
    if isinstance(value, str) and len(value) > ID_MAX:
        return ""
    return _text(value, ID_MAX)


def _kept(value: object) -> Raw:
    """An item as a mapping; one that is not is kept whole under `item`, for the record."""
    return value if isinstance(value, Mapping) else {"item": value}


def _map(value: object) -> Raw:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _whole(value: object) -> int | None:
    """A Unix time or a code, sent as a number or as digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    return None


CODE_MAX = 2**31 - 1
"""Meta's codes are small (131047); a column of them holds 32 bits."""


def _code(value: object) -> int | None:
    """An error code, or None for one no code of Meta's could be."""
    code = _whole(value)
    return code if code is not None and 0 <= code <= CODE_MAX else None


def _moment(value: object) -> int | None:
    """A Unix time in seconds, within reason."""
    moment = _whole(value)
    return moment if moment is not None and 0 < moment < TIME_MAX else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _errors(value: object) -> tuple[MetaError, ...]:
    return tuple(
        MetaError(
            _code(e.get("code")),
            _text(e.get("title"), 200),
            _text(e.get("message"), 500),
            _text(_map(e.get("error_data")).get("details"), 500),
        )
        for e in _items(value)
        if isinstance(e, Mapping)
    )


# -- the walk ---------------------------------------------------------------------------


def events_of(payload: Raw) -> Iterator[Event]:
    """Every event of a notification whose envelope was checked (bot/whatsapp/webhook.py)."""
    for entry in _items(payload.get("entry")):
        entry = _map(entry)
        waba_id = _id(entry.get("id"))
        sent_at = _moment(entry.get("time")) or 0
        for change in _items(entry.get("changes")):
            change = _map(change)
            name = _text(change.get("field"), 64)
            value = _map(change.get("value"))
            yield from _change(name, waba_id, value, sent_at)


_TEMPLATE_CHANGES = frozenset(
    {
        "message_template_status_update",
        "message_template_quality_update",
        "template_category_update",
    }
)


def _change(name: str, waba_id: str, value: Raw, sent_at: int) -> Iterator[Event]:
    if name == "messages":
        yield from _messages_change(waba_id, value)
    elif name in _TEMPLATE_CHANGES:
        yield _template(name, waba_id, value, sent_at)
    elif name == "phone_number_quality_update":
        yield NumberQualityUpdate(
            name,
            waba_id,
            value,
            _text(value.get("display_phone_number"), 32),
            _text(value.get("event"), 64),
            _text(
                value.get("current_limit") or value.get("max_daily_conversations_per_business"), 64
            ),
        )
    elif name in ("account_alerts", "account_update"):
        yield _account(name, waba_id, value)
    else:
        yield Unknown(name, waba_id, value)


def _messages_change(waba_id: str, value: Raw) -> Iterator[Event]:
    metadata = _map(value.get("metadata"))
    number = (_id(metadata.get("phone_number_id")), _id(metadata.get("display_phone_number")))
    contacts = [_contact(c) for c in _items(value.get("contacts")) if isinstance(c, Mapping)]
    # Errors may come for the whole change (`value.errors`): they belong to its messages,
    # and with no message or status to carry them they are an event of their own.
    change_errors = _errors(value.get("errors"))
    messages, statuses = _items(value.get("messages")), _items(value.get("statuses"))
    for item in messages:
        yield _message(waba_id, number, contacts, item, change_errors)
    for item in statuses:
        yield _status(waba_id, number, item)
    if change_errors and not messages and not statuses:
        yield ChangeErrors("messages", waba_id, value, number[0], number[1], change_errors)


def _contact(raw: Raw) -> Contact:
    profile = _map(raw.get("profile"))
    return Contact(
        _id(raw.get("wa_id")),
        _id(raw.get("user_id")),
        _text(profile.get("name"), 256),
        _text(profile.get("username"), 256),
    )


def _sender(item: Raw, contacts: list[Contact]) -> Contact:
    """The contact of the message's sender: matched by user id or wa_id; the only contact
    stands in only for a message that names nobody itself, never for someone else."""
    wa_id = _id(item.get("from"))
    user_id = _id(item.get("from_user_id"))
    for contact in contacts:
        if (user_id and contact.user_id == user_id) or (wa_id and contact.wa_id == wa_id):
            return contact
    if not (wa_id or user_id) and len(contacts) == 1:
        return contacts[0]
    return Contact(wa_id, user_id, "", "")


def _message(
    waba_id: str,
    number: tuple[str, str],
    contacts: list[Contact],
    given: object,
    change_errors: tuple[MetaError, ...],
) -> Event:
    item = _kept(given)
    wamid = _id(item.get("id"))
    timestamp = _moment(item.get("timestamp"))
    if not wamid or timestamp is None:
        return Malformed("messages", waba_id, item, "a message without an id or a time")
    kind = _text(item.get("type"), 32) or "unknown"
    sender = _sender(item, contacts)
    if not (sender.wa_id or sender.user_id):
        return Malformed("messages", waba_id, item, "a message from nobody")
    return Message(
        "messages",
        waba_id,
        item,
        number[0],
        number[1],
        wamid,
        timestamp,
        kind,
        sender,
        _content(kind, item),
        _id(_map(item.get("context")).get("id")),
        _errors(item.get("errors")) or change_errors,
    )


def _content(kind: str, item: Raw) -> Any:
    part = _map(item.get(kind))
    if kind == "text":
        return Text(_text(part.get("body")))
    if kind in MEDIA_TYPES:
        return Media(
            _text(part.get("id"), 128),
            _text(part.get("mime_type"), 128),
            _text(part.get("sha256"), 128),
            _text(part.get("caption"), 1024),
            _text(part.get("filename"), 256),
        )
    if kind == "location":
        return Location(
            _number(part.get("latitude")),
            _number(part.get("longitude")),
            _text(part.get("name"), 256),
            _text(part.get("address"), 512),
        )
    if kind == "contacts":
        names = (
            _text(_map(_map(c).get("name")).get("formatted_name"), 256)
            for c in _items(item.get("contacts"))
        )
        return SharedContacts(tuple(names))
    if kind == "reaction":
        return Reaction(_text(part.get("message_id"), 256), _text(part.get("emoji"), 16))
    if kind == "interactive":
        reply_kind = _text(part.get("type"), 32)
        reply = _map(part.get(reply_kind))
        return Reply(
            reply_kind,
            _text(reply.get("id"), 256),
            _text(reply.get("title"), 256),
            _text(reply.get("description"), 256),
        )
    if kind == "button":
        return Reply("button", _text(part.get("payload"), 256), _text(part.get("text"), 256), "")
    if kind == "system":
        return SystemChange(
            _text(part.get("type"), 64),
            _text(part.get("body"), 1024),
            _id(part.get("wa_id") or part.get("new_wa_id")),
            _id(part.get("new_user_id") or part.get("user_id")),
        )
    return None  # unsupported, order and kinds to come: `raw` and `errors` say the rest


def _status(waba_id: str, number: tuple[str, str], given: object) -> Event:
    item = _kept(given)
    wamid = _id(item.get("id"))
    status = _text(item.get("status"), 32)
    timestamp = _moment(item.get("timestamp"))
    if not wamid or not status or timestamp is None:
        return Malformed("messages", waba_id, item, "a status without an id, a status or a time")
    pricing = _map(item.get("pricing"))
    billable = pricing.get("billable")
    return Status(
        "messages",
        waba_id,
        item,
        number[0],
        number[1],
        wamid,
        status,
        timestamp,
        _text(item.get("recipient_id"), 32),
        _text(item.get("recipient_user_id"), 256),
        _text(item.get("biz_opaque_callback_data"), 512),
        billable if isinstance(billable, bool) else None,
        _text(pricing.get("category"), 64),
        _errors(item.get("errors")),
    )


def _template(name: str, waba_id: str, value: Raw, sent_at: int) -> Event:
    if name == "message_template_quality_update":
        event, previous = value.get("new_quality_score"), value.get("previous_quality_score")
    elif name == "template_category_update":
        event, previous = value.get("new_category"), value.get("previous_category")
    else:
        event, previous = value.get("event"), None
    template_id, event_name = _id(value.get("message_template_id")), _text(event, 64)
    if not template_id or not event_name:
        return Malformed(name, waba_id, value, "a template update without a template or an event")
    reason = value.get("reason")
    if reason in (None, "", "NONE"):  # the details, when Meta gives them, say more
        reason = _map(value.get("rejection_info")).get("reason") or reason
    return TemplateUpdate(
        name,
        waba_id,
        value,
        template_id,
        _text(value.get("message_template_name"), 512),
        _text(value.get("message_template_language"), 16),
        event_name,
        _text(previous, 64),
        _text(reason, 512),
        sent_at,
    )


def _account(name: str, waba_id: str, value: Raw) -> AccountNotice:
    alert = _map(value.get("alert_info"))
    event = value.get("event") or alert.get("alert_type")
    description = alert.get("alert_description") or _map(value.get("violation_info")).get(
        "violation_type"
    )
    return AccountNotice(
        name,
        waba_id,
        value,
        _text(event, 128),
        _text(alert.get("alert_severity"), 32),
        _text(description, 1024),
    )
