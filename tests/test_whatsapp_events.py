"""Meta's notifications read as typed events: every entry, change, message and status, in
Meta's shapes (PROTOCOLS, WhatsApp sections), never raising on what Meta may send."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.whatsapp.parsing import events_of
from rbac_core.messaging.events import (
    AccountNotice,
    ChangeErrors,
    Location,
    Malformed,
    Media,
    Message,
    NumberQualityUpdate,
    Reaction,
    Reply,
    SharedContacts,
    Status,
    SystemChange,
    TemplateUpdate,
    Text,
    Unknown,
)

from .whatsapp_requests import (
    CUSTOMER,
    DISPLAY_NUMBER,
    PHONE_NUMBER_ID,
    WABA_ID,
    inbound,
    messages_change,
    notification,
    status,
    text_message,
)


def only(change: dict[str, Any]) -> Any:
    [event] = list(events_of(notification(change)))
    return event


def test_every_entry_change_message_and_status_is_read_in_order() -> None:
    """Several clients read only entry[0].changes[0] and lose batched events."""
    first = messages_change(
        messages=[inbound("text", {"body": str(i)}, wamid=f"wamid.{i}") for i in range(3)],
        statuses=[status("sent", "wamid.A"), status("read", "wamid.B")],
    )
    second = text_message("fourth", wamid="wamid.3")
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": WABA_ID, "changes": [first, second]},
            {"id": "OTHER_WABA", "changes": [text_message("fifth", wamid="wamid.4")]},
        ],
    }
    events = list(events_of(payload))
    assert [getattr(e, "wamid", None) for e in events] == [
        "wamid.0",
        "wamid.1",
        "wamid.2",
        "wamid.A",
        "wamid.B",
        "wamid.3",
        "wamid.4",
    ]
    assert events[-1].waba_id == "OTHER_WABA"


def test_a_text_message_names_its_number_its_sender_and_its_time() -> None:
    message = only(text_message("Hello there", wamid="wamid.HELLO"))
    assert isinstance(message, Message)
    assert (message.phone_number_id, message.display_phone_number) == (
        PHONE_NUMBER_ID,
        DISPLAY_NUMBER,
    )
    assert (message.wamid, message.timestamp, message.kind) == ("wamid.HELLO", 1764900000, "text")
    assert (message.sender.wa_id, message.sender.name) == (CUSTOMER, "Kerry Fisher")
    assert message.content == Text("Hello there")


def test_every_kind_of_inbound_message_has_its_typed_content() -> None:
    media = {"id": "1234", "mime_type": "image/jpeg", "sha256": "abc=", "caption": "receipt"}
    cases = [
        (inbound("image", media), Media("1234", "image/jpeg", "abc=", "receipt", "")),
        (
            inbound("audio", {"id": "55", "mime_type": "audio/ogg", "voice": True}),
            Media("55", "audio/ogg", "", "", ""),
        ),
        (inbound("document", {"id": "66", "filename": "a.pdf"}), Media("66", "", "", "", "a.pdf")),
        (inbound("sticker", {"id": "77", "animated": False}), Media("77", "", "", "", "")),
        (inbound("video", {"id": "88"}), Media("88", "", "", "", "")),
        (
            inbound("location", {"latitude": 37.48, "longitude": "-122.14", "name": "HQ"}),
            Location(37.48, -122.14, "HQ", ""),
        ),
        (
            {
                "from": CUSTOMER,
                "id": "wamid.C",
                "timestamp": "1",
                "type": "contacts",
                "contacts": [{"name": {"formatted_name": "Ana"}, "phones": [{"phone": "+1"}]}],
            },
            SharedContacts(("Ana",)),
        ),
        (
            inbound("reaction", {"message_id": "wamid.OUT", "emoji": "👍"}),
            Reaction("wamid.OUT", "👍"),
        ),
        (inbound("reaction", {"message_id": "wamid.OUT"}), Reaction("wamid.OUT", "")),
        (
            inbound(
                "interactive",
                {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
            ),
            Reply("button_reply", "yes", "Yes", ""),
        ),
        (
            inbound(
                "interactive",
                {
                    "type": "list_reply",
                    "list_reply": {"id": "r2", "title": "Two", "description": "d"},
                },
            ),
            Reply("list_reply", "r2", "Two", "d"),
        ),
        (
            inbound("button", {"payload": "STOP", "text": "Stop promotions"}),
            Reply("button", "STOP", "Stop promotions", ""),
        ),
        (
            inbound(
                "system", {"body": "changed", "type": "user_changed_number", "wa_id": "16505550000"}
            ),
            SystemChange("user_changed_number", "changed", "16505550000", ""),
        ),
        (
            inbound(
                "system", {"body": "id", "type": "user_changed_user_id", "new_user_id": "US.new"}
            ),
            SystemChange("user_changed_user_id", "id", "", "US.new"),
        ),
    ]
    for item, content in cases:
        message = only(messages_change(messages=[item]))
        assert isinstance(message, Message), item
        assert message.content == content, item


def test_unsupported_and_unknown_kinds_keep_their_errors_and_raw_item() -> None:
    unsupported = {
        "from": CUSTOMER,
        "id": "wamid.U",
        "timestamp": "1764900000",
        "type": "unsupported",
        "errors": [
            {
                "code": 131051,
                "title": "Message type unknown",
                "message": "Message type unknown",
                "error_data": {"details": "Message type is currently not supported."},
            }
        ],
    }
    message = only(messages_change(messages=[unsupported]))
    assert (message.kind, message.content) == ("unsupported", None)
    assert message.errors[0].code == 131051
    assert message.errors[0].details == "Message type is currently not supported."
    order = only(
        messages_change(messages=[inbound("order", {"catalog_id": "1", "product_items": []})])
    )
    assert (order.kind, order.content, order.raw["order"]["catalog_id"]) == ("order", None, "1")


def test_people_with_a_username_are_known_by_their_business_scoped_id() -> None:
    change = messages_change(
        messages=[
            {
                "from": "",
                "from_user_id": "US.13491208655302741918",
                "id": "wamid.UN",
                "timestamp": "1764900000",
                "type": "text",
                "text": {"body": "hi"},
            }
        ],
    )
    change["value"]["contacts"] = [
        {
            "profile": {"name": "Pat", "username": "@pat"},
            "wa_id": "",
            "user_id": "US.13491208655302741918",
        }
    ]
    message = only(change)
    assert (message.sender.wa_id, message.sender.user_id) == ("", "US.13491208655302741918")
    assert message.sender.username == "@pat"


def test_statuses_carry_the_callback_pricing_and_errors() -> None:
    failed = status(
        "failed",
        biz_opaque_callback_data="outbox:42",
        recipient_user_id="US.1",
        pricing={"billable": False, "pricing_model": "PMP", "category": "service"},
        errors=[
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "More than 24 hours",
                "error_data": {
                    "details": "Message failed to send because more than 24 hours have passed."
                },
            }
        ],
    )
    event = only(messages_change(statuses=[failed]))
    assert isinstance(event, Status)
    assert (event.wamid, event.status, event.callback) == ("wamid.OUT1", "failed", "outbox:42")
    assert (event.billable, event.pricing_category, event.recipient_user_id) == (
        False,
        "service",
        "US.1",
    )
    assert event.errors[0].code == 131047


def test_statuses_rank_forward_and_failed_is_final() -> None:
    ranks = {
        s: only(messages_change(statuses=[status(s)])).rank()
        for s in ("sent", "delivered", "read", "played", "failed")
    }
    assert ranks["sent"] < ranks["delivered"] < ranks["read"] < ranks["played"] < ranks["failed"]


def test_template_reviews_quality_and_category_changes() -> None:
    rejected = only(
        {
            "field": "message_template_status_update",
            "value": {
                "event": "REJECTED",
                "message_template_id": 594425479261596,
                "message_template_name": "order_update",
                "message_template_language": "en_US",
                "reason": None,
                "rejection_info": {
                    "reason": "INVALID_FORMAT",
                    "recommendation": "Fix the variables",
                },
            },
        }
    )
    assert isinstance(rejected, TemplateUpdate)
    assert (rejected.template_id, rejected.event, rejected.reason) == (
        "594425479261596",
        "REJECTED",
        "INVALID_FORMAT",
    )
    assert rejected.raw["message_template_id"] == 594425479261596  # sent as a number
    quality = only(
        {
            "field": "message_template_quality_update",
            "value": {
                "previous_quality_score": "GREEN",
                "new_quality_score": "YELLOW",
                "message_template_id": "12",
                "message_template_name": "t",
                "message_template_language": "en",
            },
        }
    )
    assert (quality.event, quality.previous, quality.template_id) == ("YELLOW", "GREEN", "12")
    category = only(
        {
            "field": "template_category_update",
            "value": {
                "message_template_id": "13",
                "message_template_name": "t",
                "message_template_language": "en",
                "previous_category": "UTILITY",
                "new_category": "MARKETING",
            },
        }
    )
    assert (category.event, category.previous) == ("MARKETING", "UTILITY")


def test_number_quality_and_account_notices() -> None:
    quality = only(
        {
            "field": "phone_number_quality_update",
            "value": {
                "display_phone_number": DISPLAY_NUMBER,
                "event": "DOWNGRADE",
                "max_daily_conversations_per_business": "TIER_250",
            },
        }
    )
    assert isinstance(quality, NumberQualityUpdate)
    assert (quality.display_phone_number, quality.event, quality.limit) == (
        DISPLAY_NUMBER,
        "DOWNGRADE",
        "TIER_250",
    )
    alert = only(
        {
            "field": "account_alerts",
            "value": {
                "entity_type": "WABA",
                "entity_id": WABA_ID,
                "alert_info": {
                    "alert_severity": "CRITICAL",
                    "alert_status": "ACTIVE",
                    "alert_type": "OBA_APPROVED",
                    "alert_description": "Official business account approved",
                },
            },
        }
    )
    assert isinstance(alert, AccountNotice)
    assert (alert.event, alert.severity) == ("OBA_APPROVED", "CRITICAL")
    update = only({"field": "account_update", "value": {"event": "ACCOUNT_RESTRICTION"}})
    assert (update.change, update.event) == ("account_update", "ACCOUNT_RESTRICTION")


def test_a_kind_of_change_nobody_knows_is_kept_not_refused() -> None:
    event = only(
        {"field": "business_capability_update", "value": {"max_daily_conversation_per_phone": 1000}}
    )
    assert isinstance(event, Unknown)
    assert event.raw == {"max_daily_conversation_per_phone": 1000}


def test_items_too_broken_to_act_on_are_malformed_not_errors() -> None:
    broken = messages_change(
        messages=[
            {"from": CUSTOMER, "type": "text"},
            {"id": "wamid.X", "timestamp": "soon", "type": "text"},
        ],
        statuses=[{"id": "wamid.Y", "timestamp": "1"}, "not an object"],
    )
    broken["value"]["contacts"] = []
    events = list(events_of(notification(broken)))
    assert [type(e) for e in events] == [Malformed] * 4
    nobody = messages_change(
        messages=[{"id": "wamid.Z", "timestamp": "1", "type": "text", "from": ""}]
    )
    nobody["value"]["contacts"] = []
    assert isinstance(only(nobody), Malformed)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
keys = st.sampled_from(
    [
        "id",
        "from",
        "timestamp",
        "type",
        "text",
        "status",
        "errors",
        "contacts",
        "metadata",
        "messages",
        "statuses",
        "pricing",
        "event",
        "alert_info",
        "field",
        "value",
    ]
)
loose = st.dictionaries(keys, json_values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(
        st.sampled_from(
            [
                "messages",
                "account_update",
                "message_template_status_update",
                "template_category_update",
                "phone_number_quality_update",
                "x",
            ]
        ),
        max_size=3,
    ),
    values=st.lists(loose, max_size=3),
    items=st.lists(loose | json_values, max_size=4),
)
def test_whatever_the_changes_hold_reading_them_never_raises(
    fields: list[str], values: list[dict[str, Any]], items: list[Any]
) -> None:
    changes = []
    for name, value in zip(fields, values, strict=False):
        value = dict(value)
        value["messages"], value["statuses"] = items, items
        changes.append({"field": name, "value": value})
    for event in events_of(notification(*changes)):
        assert event.change in fields


def test_digits_that_are_not_ascii_and_numbers_too_large_are_not_times_or_places() -> None:
    """`'²'.isdigit()` is True and `int('²')` raises; `float('1' * 400)` overflows."""
    change = messages_change(
        messages=[
            {"from": CUSTOMER, "id": "wamid.SUP", "timestamp": "²", "type": "text"},
            inbound("location", {"latitude": "1" + "0" * 400, "longitude": "nan"}, wamid="wamid.L"),
            {"from": CUSTOMER, "id": "wamid.FAR", "timestamp": 2**41, "type": "text"},
        ],
        statuses=[{"id": "wamid.S", "status": "sent", "timestamp": "①"}],
    )
    events = list(events_of(notification(change)))
    assert [type(e).__name__ for e in events] == ["Malformed", "Message", "Malformed", "Malformed"]
    assert events[1].content == Location(None, None, "", "")


def test_errors_meta_reports_for_a_whole_change_are_never_dropped() -> None:
    error = {"code": 131000, "title": "Something went wrong", "message": "Something went wrong"}
    alone = messages_change()
    alone["value"]["errors"] = [error]
    [event] = list(events_of(notification(alone)))
    assert isinstance(event, ChangeErrors)
    assert (event.phone_number_id, event.errors[0].code) == (PHONE_NUMBER_ID, 131000)
    # An old button tapped again: an interactive message without its part, errors beside it.
    tapped = messages_change(
        messages=[{"from": CUSTOMER, "id": "wamid.T", "timestamp": "1", "type": "interactive"}]
    )
    tapped["value"]["errors"] = [error]
    [message] = list(events_of(notification(tapped)))
    assert isinstance(message, Message)
    assert message.errors[0].code == 131000


def test_text_with_nul_or_lone_surrogates_is_cleaned_not_refused() -> None:
    message = only(messages_change(messages=[inbound("text", {"body": "a\x00b\ud800c"})]))
    assert message.content == Text("a\ufffdb\ufffdc")


def test_a_message_naming_someone_else_is_not_given_the_only_contact() -> None:
    change = messages_change(
        messages=[
            {
                "from": "19999999999",
                "id": "wamid.O",
                "timestamp": "1",
                "type": "text",
                "text": {"body": "x"},
            }
        ]
    )
    message = only(change)
    assert (message.sender.wa_id, message.sender.name) == ("19999999999", "")


def test_ids_longer_than_any_of_metas_are_malformed_not_cut() -> None:
    long_id = "wamid." + "A" * 600
    change = messages_change(messages=[inbound("text", {"body": "x"}, wamid=long_id)])
    assert isinstance(only(change), Malformed)


def test_template_updates_carry_their_time_and_need_an_id_and_an_event() -> None:
    payload = notification(
        {
            "field": "message_template_status_update",
            "value": {
                "event": "PAUSED",
                "message_template_id": 7,
                "message_template_name": "t",
                "message_template_language": "en",
                "reason": "NONE",
                "rejection_info": {"reason": "PROMOTIONAL"},
            },
        }
    )
    payload["entry"][0]["time"] = 1764900200
    [paused] = list(events_of(payload))
    assert (paused.template_id, paused.event, paused.time, paused.reason) == (
        "7",
        "PAUSED",
        1764900200,
        "PROMOTIONAL",
    )
    empty = only({"field": "message_template_status_update", "value": {}})
    assert isinstance(empty, Malformed)


def test_an_item_that_is_not_an_object_is_kept_whole_for_the_record() -> None:
    [event] = list(events_of(notification(messages_change(statuses=["not an object"]))))
    assert isinstance(event, Malformed)
    assert event.raw == {"item": "not an object"}
