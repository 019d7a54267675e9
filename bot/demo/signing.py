"""Requests shaped and signed exactly as Slack and Meta send them (shared/PROTOCOLS.md).

The demo plays Slack and Meta towards the app over real HTTP, so the app's doors
check these signatures as they would check Slack's and Meta's own: a demo that
signed loosely would show a product that is not the one people deploy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

TEAM_ID = "T0WA0ACCESS"
APP_ID = "A0WAACCESS"
OPS_CHANNEL = ("C0WAOPS01", "wa-ops")
TRIGGER_ID = "13345224609.738474920.8088930838d88f008e0"
LEGACY_TOKEN = "gIkuvaNzQIHg97ATvDxqgjtO"  # the deprecated verification token Slack still sends


def slack_headers(secret: str, body: str) -> dict[str, str]:
    """`X-Slack-Signature: v0=` + hex HMAC-SHA256 over `v0:{timestamp}:{body}`."""
    ts = str(int(time.time()))
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


def slash_command(user: tuple[str, str], command: str, text: str, response_url: str) -> str:
    """A slash command's form body, with every field Slack sends; `user` is (id, name)."""
    user_id, user_name = user
    return urlencode(
        {
            "token": LEGACY_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": "wa-demo",
            "channel_id": OPS_CHANNEL[0],
            "channel_name": OPS_CHANNEL[1],
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": TRIGGER_ID,
        }
    )


def button_click(
    user: tuple[str, str], button: dict[str, Any], message_text: str, response_url: str
) -> str:
    """The `block_actions` payload of a click on `button` of an ephemeral message."""
    user_id, user_name = user
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": LEGACY_TOKEN,
        "container": {
            "type": "message",
            "message_ts": f"{time.time():.6f}",
            "channel_id": OPS_CHANNEL[0],
            "is_ephemeral": True,
        },
        "trigger_id": TRIGGER_ID,
        "team": {"id": TEAM_ID, "domain": "wa-demo"},
        "channel": {"id": OPS_CHANNEL[0], "name": OPS_CHANNEL[1]},
        "message": {"type": "message", "text": message_text},
        "response_url": response_url,
        "actions": [
            {
                "action_id": button["action_id"],
                "block_id": button.get("block_id", ""),
                "value": button.get("value", ""),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
                "text": button.get("text", {"type": "plain_text", "text": ""}),
            }
        ],
        "state": {"values": {}},
    }
    return urlencode({"payload": json.dumps(payload)})


def meta_headers(app_secret: str, body: bytes) -> dict[str, str]:
    """`X-Hub-Signature-256: sha256=` + hex HMAC-SHA256 over the raw bytes."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


def as_meta_sends(payload: dict[str, Any]) -> bytes:
    """Meta's own serialisation: compact, non-ASCII escaped; the signature covers these bytes."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


def notification(
    waba_id: str,
    business: tuple[str, str],
    *,
    contacts: Sequence[dict[str, Any]] = (),
    messages: Sequence[dict[str, Any]] = (),
    statuses: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One `messages` change in Meta's envelope; `business` is (E.164, phone-number id)."""
    e164, phone_number_id = business
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": e164.lstrip("+"), "phone_number_id": phone_number_id},
    }
    if contacts:
        value["contacts"] = list(contacts)
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "messages", "value": value}]}],
    }


def contact(wa_id: str, name: str) -> dict[str, Any]:
    """Who wrote, as a notification's `contacts[]` names them."""
    return {"profile": {"name": name}, "wa_id": wa_id}


def customer_text(wa_id: str, wamid: str, body: str, at: int) -> dict[str, Any]:
    """A customer's text message, as a notification's `messages[]` carries it."""
    return {
        "from": wa_id,
        "id": wamid,
        "timestamp": str(at),
        "type": "text",
        "text": {"body": body},
    }


def message_status(
    wamid: str, state: str, recipient: str, callback: str, at: int
) -> dict[str, Any]:
    """One status of a message the business sent, with the callback data it was sent with."""
    return {
        "id": wamid,
        "status": state,
        "timestamp": str(at),
        "recipient_id": recipient,
        "biz_opaque_callback_data": callback,
        "pricing": {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        },
    }
