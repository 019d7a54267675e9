"""Requests signed exactly as Slack signs them (v0 HMAC-SHA256 over ts:body)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def signature(secret: str, timestamp: str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(secret, ts, body),
    }


def slash_command(user_id: str, text: str, response_url: str, command: str = "/wa-role") -> str:
    """A slash-command body with every field Slack sends."""
    return urlencode(
        {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "team_id": "T0WA0ACCESS",
            "team_domain": "wa-team",
            "channel_id": "C0WAOPS01",
            "channel_name": "wa-ops",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0WAACCESS",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        }
    )


def block_action(user_id: str, action_id: str, value: str, response_url: str) -> str:
    """An interactivity `block_actions` payload for a button in an ephemeral message."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "team_id": "T0WA0ACCESS"},
        "api_app_id": "A0WAACCESS",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": {
            "type": "message",
            "message_ts": "1795000000.000100",
            "channel_id": "C0WAOPS01",
            "is_ephemeral": True,
        },
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "team": {"id": "T0WA0ACCESS", "domain": "wa-team"},
        "channel": {"id": "C0WAOPS01", "name": "wa-ops"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "wa_confirmation",
                "value": value,
                "type": "button",
                "action_ts": "1795000001.000200",
                "text": {"type": "plain_text", "text": "Confirm"},
            }
        ],
        "state": {"values": {}},
    }
    return urlencode({"payload": json.dumps(payload)})


def home_block_action(user_id: str, action_id: str, value: str) -> str:
    """A click on a button in the clicker's App Home: Slack sends the view, no response_url."""
    payload = json.loads(parse_qs(block_action(user_id, action_id, value, ""))["payload"][0])
    for key in ("response_url", "channel", "state"):
        del payload[key]
    payload["container"] = {"type": "view", "view_id": "V0WAHOME01"}
    payload["view"] = {
        "id": "V0WAHOME01",
        "team_id": "T0WA0ACCESS",
        "type": "home",
        "callback_id": "",
        "private_metadata": "",
        "state": {"values": {}},
        "hash": "1795000000.a1b2c3d4",
        "blocks": [],
    }
    return urlencode({"payload": json.dumps(payload)})


def app_home_opened(user_id: str, tab: str = "home", event_id: str = "Ev0WAHOME01") -> str:
    """An Events API envelope for `app_home_opened`, as JSON."""
    return json.dumps(
        {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "team_id": "T0WA0ACCESS",
            "api_app_id": "A0WAACCESS",
            "event": {
                "type": "app_home_opened",
                "user": user_id,
                "channel": "D0WAHOME1",
                "tab": tab,
                "event_ts": "1795000002.000300",
            },
            "type": "event_callback",
            "event_id": event_id,
            "event_time": 1795000002,
        }
    )


def view_submission(
    user_id: str, callback_id: str, private_metadata: str, values: dict[str, dict[str, Any]]
) -> str:
    """A modal submitted by `user_id`, as the `payload=` Slack sends."""
    payload = {
        "type": "view_submission",
        "team": {"id": "T0WA0ACCESS", "domain": "wa-team"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": "T0WA0ACCESS"},
        "api_app_id": "A0WAACCESS",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "view": {
            "id": "V0WAMODAL1",
            "team_id": "T0WA0ACCESS",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": values},
            "hash": "156772938.1827394",
            "title": {"type": "plain_text", "text": "Verify with 2FA"},
        },
        "response_urls": [],
        "is_enterprise_install": False,
    }
    return urlencode({"payload": json.dumps(payload)})
