"""A queued send as the Graph API wants it (PROTOCOLS, Sending): the core queues what to
say (text, or a template with its language and values); this says it in Meta's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def graph_message(send: Mapping[str, Any], callback: str) -> dict[str, Any]:
    """The `/messages` body for one queued send; `callback` (the outbox id) comes back
    in every status of the message as `biz_opaque_callback_data`."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": str(send["to"]),
        "biz_opaque_callback_data": callback,
    }
    if send.get("text") is not None:
        body["type"] = "text"
        body["text"] = {"body": str(send["text"]), "preview_url": False}
        return body
    template: dict[str, Any] = {
        "name": str(send["template"]),
        "language": {"code": str(send.get("lang") or "en_US"), "policy": "deterministic"},
    }
    values = [str(v) for v in send.get("params") or []]
    if values:
        template["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}
        ]
    body["type"] = "template"
    body["template"] = template
    return body
