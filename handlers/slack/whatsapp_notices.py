"""What the WhatsApp half tells people in Slack: alerts about numbers and the account,
template reviews, and sends that failed, explained.

No notice carries a customer's number or words: a failed send names its
conversation (`C-12`), which its sender can open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rbac_core.messaging.meta_codes import explain

from .blocks import escape

Message = dict[str, Any]


def _said(data: Mapping[str, Any], key: str) -> str:
    return escape(str(data.get(key) or ""))


def unknown_number(data: Mapping[str, Any]) -> Message:
    display = data.get("display_number")
    shown = f" (+{escape(str(display))})" if display else ""
    pid = escape(str(data["phone_number_id"]))
    return {
        "text": f":warning: Meta sent events for phone-number id `{pid}`{shown}, which this "
        "workspace has not registered: they are kept, not processed. If the number is "
        f"yours, an operator registers it with `wa-access number add +E164 --id {pid}`."
    }


def number_quality(data: Mapping[str, Any]) -> Message:
    limit = f" Messaging limit: {_said(data, 'limit')}." if data.get("limit") else ""
    return {
        "text": f":bar_chart: Number +{_said(data, 'display_number')}: quality update "
        f"*{_said(data, 'event')}*.{limit}"
    }


def account(data: Mapping[str, Any]) -> Message:
    severity = f" ({_said(data, 'severity')})" if data.get("severity") else ""
    description = f": {_said(data, 'description')}" if data.get("description") else ""
    return {
        "text": f":rotating_light: WhatsApp account {_said(data, 'change').replace('_', ' ')}"
        f"{severity}: *{_said(data, 'event')}*{description}"
    }


def template(data: Mapping[str, Any]) -> Message:
    name = f"*{_said(data, 'name')}* ({_said(data, 'language')})"
    field = str(data["field"])
    event = _said(data, "event")
    if field == "message_template_quality_update":
        what = f"quality is now {event}"
    elif field == "template_category_update":
        what = f"category is now {event}"
    else:
        what = f"review: {event}"
    previous = f" (was {_said(data, 'previous')})" if data.get("previous") else ""
    reason = data.get("reason")
    why = f" Reason: {escape(str(reason))}." if reason and reason != "NONE" else ""
    return {"text": f"Template {name} {what}{previous}.{why}"}


def send_failed(data: Mapping[str, Any]) -> Message:
    code = data.get("code")
    detail = (
        f" Meta said: {_said(data, 'detail') or _said(data, 'title')}."
        if (data.get("detail") or data.get("title"))
        else ""
    )
    label = f"{code}: " if code is not None else ""
    return {
        "text": f":x: Your message in conversation C-{int(data['conversation'])} was not "
        f"delivered. {label}{escape(explain(code if isinstance(code, int) else None))}.{detail}"
    }


def number_paused(data: Mapping[str, Any]) -> Message:
    return {
        "text": f":no_entry: Sending from {_said(data, 'number')} is paused: "
        f"{_said(data, 'reason')}. Its messages wait; an operator resumes it with "
        f"`wa-access number resume {_said(data, 'number')}` once Meta allows it again."
    }


def webhook_given_up(data: Mapping[str, Any]) -> Message:
    return {
        "text": f":rotating_light: Webhook body {int(data['webhook'])} could not be processed "
        f"after {int(data['attempts'])} attempts ({_said(data, 'reason')}); it is kept in "
        "`inbound_webhooks` for an operator to look at."
    }


RENDERERS = {
    "whatsapp.unknown_number": unknown_number,
    "whatsapp.number_quality": number_quality,
    "whatsapp.account": account,
    "whatsapp.template": template,
    "whatsapp.send_failed": send_failed,
    "whatsapp.number_paused": number_paused,
    "whatsapp.webhook_given_up": webhook_given_up,
}
