"""Notices from the outbox, as Slack messages: what each kind of notice says.

The core writes what happened (rbac_core/outbox/: a kind, a symbolic
destination, JSON data); this module alone knows how Slack shows it. The
worker (bot/outbox_worker.py) resolves the destination and posts the message.
An unknown kind, or data missing a field, is a notice that can never be shown:
`UnknownNotice`, which the worker gives up on instead of retrying.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .access import request_message
from .blocks import escape
from .whatsapp_notices import RENDERERS as WHATSAPP_RENDERERS

Message = dict[str, Any]


class UnknownNotice(ValueError):
    """A notice this version cannot render: its data lacks what its kind needs."""


class UnknownKind(UnknownNotice):
    """A kind this version does not know: perhaps a newer one, which a newer worker
    (in a rolling deploy) can render, so it is retried rather than given up."""


def _where(scope: object) -> str:
    return "the whole workspace" if not scope or scope == "*" else str(scope)


def _minute(moment: object) -> str:
    return str(moment or "")[:16].replace("T", " ")


def role_changed(data: Mapping[str, Any]) -> Message:
    """Who changed whose access, where, until when and why (SPEC §5)."""
    verb = str(data["verb"])
    until = f", until {_minute(data['expires_at'])} UTC" if data.get("expires_at") else ""
    reason = f" Reason: {escape(str(data['reason']))}" if data.get("reason") else ""
    preposition = "to" if verb == "assigned" else "from"
    return {
        "text": f"<@{data['actor']}> {verb} *{data['role']}* {preposition} <@{data['user']}> "
        f"in {_where(data['scope'])}{until}.{reason}"
    }


def access_decided(data: Mapping[str, Any]) -> Message:
    if data["approved"]:
        return {
            "text": f"Your request for *{data['role']}* was approved by <@{data['by']}>; "
            f"it lasts until {_minute(data['expires_at'])} UTC."
        }
    return {"text": f"Your request for *{data['role']}* was denied by <@{data['by']}>."}


def expired(data: Mapping[str, Any]) -> Message:
    return {"text": escape(str(data["text"]))}


def access_unannounced(data: Mapping[str, Any]) -> Message:
    """To a requester whose request's post to the approvers failed for good."""
    return {
        "text": f"Your request for *{data['role']}* is saved, but I could not tell the "
        f"approvers ({escape(str(data['why']))}): ask an admin, or an approver can decide "
        "it in their App Home."
    }


def twofa_locked(data: Mapping[str, Any]) -> Message:
    return {
        "text": f":rotating_light: 2FA locked for <@{data['user']}> until "
        f"{_minute(data['until'])} UTC after 5 wrong codes in a row."
    }


RENDERERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    "role.changed": role_changed,
    "access.requested": request_message,
    "access.decided": access_decided,
    "expired": expired,
    "access.unannounced": access_unannounced,
    "2fa.locked": twofa_locked,
    **WHATSAPP_RENDERERS,
}


def render(kind: str, data: Mapping[str, Any]) -> Message:
    renderer = RENDERERS.get(kind)
    if renderer is None:
        raise UnknownKind(f"no Slack message for notices of kind {kind!r}")
    try:
        return renderer(data)
    except (KeyError, TypeError) as exc:
        raise UnknownNotice(f"a {kind} notice without {exc}") from exc
