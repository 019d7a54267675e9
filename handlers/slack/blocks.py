"""Block Kit rendering of surface-neutral replies, within Slack's limits."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any

from ..commands.roles import Reply

CONFIRM_ACTION = "wa_confirm"
CANCEL_ACTION = "wa_cancel"
SECTION_LIMIT = 3000  # characters of mrkdwn in one section block
BLOCK_LIMIT = 50  # blocks in one message
OUT_OF_DATE = "That button is out of date or not one of mine; nothing was done."


def escape(text: str) -> str:
    """Slack mrkdwn needs &, < and > escaped, or user text could forge a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention_users(text: str, users: Iterable[str]) -> str:
    """Turn the given user ids into mentions; other capitalised words are left alone.

    Searches for the ids themselves rather than for anything shaped like one:
    a lookbehind at the start of a pattern keeps the regex engine from skipping
    ahead, which made this the dearest step of rendering a `/wa-role show`.
    """
    present = frozenset(user for user in users if user in text)
    if not present:
        return text

    def mention(match: re.Match[str]) -> str:
        start = match.start()
        before = text[start - 1] if start else " "
        if before in "<@" or before.isalnum() or before == "_":
            return match.group()  # already a mention, or part of a longer word
        return f"<@{match.group()}>"

    return _ids_pattern(present).sub(mention, text)


@functools.lru_cache(maxsize=256)
def _ids_pattern(ids: frozenset[str]) -> re.Pattern[str]:
    longest_first = sorted(map(re.escape, ids), key=len, reverse=True)
    return re.compile("(?:" + "|".join(longest_first) + r")(?!\w)")


def _chunks(text: str, limit: int) -> list[str]:
    """Split at line ends where possible, so no section exceeds Slack's limit."""
    if len(text) <= limit and text[:1] != "\n" and text.strip():
        return [text]  # what _split makes of it (nearly every reply), without the work
    return _split(text, limit)


def _split(text: str, limit: int) -> list[str]:
    pieces = [
        line[i : i + limit] for line in text.split("\n") for i in range(0, max(len(line), 1), limit)
    ]
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}\n{piece}" if current else piece
        if current and len(candidate) > limit:
            chunks.append(current)
            current = piece
        else:
            current = candidate
    if current.strip():
        chunks.append(current)
    return chunks or [" "]


def message(reply: Reply, users: Iterable[str] = ()) -> dict[str, Any]:
    """An ephemeral message for `reply`; a confirmation gets Confirm / Cancel buttons."""
    text = mention_users(escape(reply.text), users)
    sections = _chunks(text, SECTION_LIMIT)
    room = BLOCK_LIMIT - (1 if reply.kind == "confirm" else 0)
    if len(sections) > room:
        sections = [*sections[: room - 1], "_…cut short: the rest did not fit in one message_"]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in sections
    ]
    if reply.kind == "confirm" and reply.pending_id:
        blocks.append(
            {
                "type": "actions",
                "block_id": "wa_confirmation",
                "elements": [
                    {
                        "type": "button",
                        "action_id": CONFIRM_ACTION,
                        "text": {"type": "plain_text", "text": "Confirm"},
                        "style": "primary",
                        "value": reply.pending_id,
                    },
                    {
                        "type": "button",
                        "action_id": CANCEL_ACTION,
                        "text": {"type": "plain_text", "text": "Cancel"},
                        "value": reply.pending_id,
                    },
                ],
            }
        )
    return {"response_type": "ephemeral", "text": text[:SECTION_LIMIT], "blocks": blocks}


def clicked_value(body: dict[str, Any]) -> str:
    """The `value` of the button clicked (the intake has checked `actions`' shape)."""
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def own_json(text: str) -> dict[str, Any] | None:
    """A JSON object this app put in a button value or a view's private_metadata, or None.

    None when the text is not one: a forged payload, or a button from a version
    of this app that encoded it otherwise. Listeners answer that as out of date.
    """
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def clicked_json(body: dict[str, Any]) -> dict[str, Any] | None:
    """The clicked button's value as a JSON object (see `own_json`)."""
    return own_json(clicked_value(body))
