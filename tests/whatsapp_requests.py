"""WhatsApp Cloud API webhook payloads in the shapes of Meta's documentation, signed as
Meta signs them: `X-Hub-Signature-256: sha256=` + hex HMAC-SHA256(app secret, raw body)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

APP_SECRET = "meta-app-secret-for-tests-0123456789"
VERIFY_TOKEN = "verify-token-for-tests"
WABA_ID = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_NUMBER = "15550001111"
CUSTOMER = "16505551234"


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": signature(body)}


def notification(*changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": list(changes)}],
    }


def text_message(
    body: str = "Hello",
    wamid: str = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
    timestamp: int = 1_764_900_000,
) -> dict[str, Any]:
    """A change carrying one inbound text message (PROTOCOLS, Payload shape)."""
    return {
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": DISPLAY_NUMBER,
                "phone_number_id": PHONE_NUMBER_ID,
            },
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": CUSTOMER}],
            "messages": [
                {
                    "from": CUSTOMER,
                    "id": wamid,
                    "timestamp": str(timestamp),
                    "type": "text",
                    "text": {"body": body},
                }
            ],
        },
    }


def messages_change(
    *,
    messages: Sequence[dict[str, Any]] = (),
    statuses: Sequence[dict[str, Any]] = (),
    contacts: Sequence[dict[str, Any]] | None = None,
    phone_number_id: str = PHONE_NUMBER_ID,
) -> dict[str, Any]:
    """A `messages` change: inbound messages with their contacts, and statuses."""
    if contacts is None:
        contacts = [{"profile": {"name": "Kerry Fisher"}, "wa_id": CUSTOMER}]
    return {
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": DISPLAY_NUMBER,
                "phone_number_id": phone_number_id,
            },
            "contacts": list(contacts),
            "messages": list(messages),
            "statuses": list(statuses),
        },
    }


def inbound(
    kind: str,
    part: Any,
    wamid: str = "wamid.IN1",
    *,
    sender: str = CUSTOMER,
    timestamp: int = 1_764_900_000,
    **extra: Any,
) -> dict[str, Any]:
    """One inbound message of `kind`, its typed part under that key (Meta's shape)."""
    return {
        "from": sender,
        "id": wamid,
        "timestamp": str(timestamp),
        "type": kind,
        kind: part,
        **extra,
    }


def status(
    state: str,
    wamid: str = "wamid.OUT1",
    *,
    timestamp: int = 1_764_900_100,
    **extra: Any,
) -> dict[str, Any]:
    """One status of a message we sent (`biz_opaque_callback_data`, errors: `extra`)."""
    return {
        "id": wamid,
        "status": state,
        "timestamp": str(timestamp),
        "recipient_id": CUSTOMER,
        **extra,
    }


def as_meta_sends(payload: dict[str, Any]) -> bytes:
    """Meta's own serialisation: compact, with non-ASCII characters escaped (é as \\u00e9)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()
