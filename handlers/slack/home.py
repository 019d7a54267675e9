"""The App Home tab: your roles, what they let you do where, 2FA, and what waits for you.

Built from gate calls made as the viewer, so the tab shows exactly what the
viewer is allowed to see and every look is audited like any other.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from rbac_core import Gate
from rbac_core.principals import Principal

from .access import decision_buttons
from .blocks import escape
from .retries import TakenOnce, once_per_event

log = logging.getLogger(__name__)

MAX_ROWS = 20  # per list: a Home view holds at most 100 blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _where(scope: str) -> str:
    return "the whole workspace" if scope == "*" else scope


def home_view(gate: Gate, user: str) -> dict[str, Any]:
    shown = gate.submit(Principal.slack_user(user), "slack", "role.show", {})
    twofa = gate.submit(Principal.slack_user(user), "slack", "2fa.status", {})
    pending = gate.submit(Principal.slack_user(user), "slack", "access.pending", {})
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your WhatsApp access"}}
    ]
    grants = shown.data.get("grants", []) if shown.ok else []
    if grants:
        lines = []
        for g in grants[:MAX_ROWS]:
            until = (
                f" until {g['expires_at'][:16].replace('T', ' ')} UTC" if g["expires_at"] else ""
            )
            state = " _(expired)_" if g["expired"] else ""
            lines.append(f"• *{g['role']}* in {_where(g['scope'])}{until}{state}")
        blocks.append(_section("*Roles*\n" + "\n".join(lines)))
    else:
        blocks.append(
            _section(
                "*Roles*\nNone yet: ask an admin, or request access with "
                "`/wa-role request ROLE --for 4h --reason …`."
            )
        )
    effective = shown.data.get("effective", {}) if shown.ok else {}
    for scope in sorted(effective, key=lambda s: (s != "*", s))[:MAX_ROWS]:
        perms = ", ".join(f"`{p}`" for p in effective[scope])
        blocks.append(_section(f"*In {_where(scope)} you may:* {perms}"))
    blocks.append(_section(f"*Two-factor authentication*\n{escape(twofa.message)}"))
    mine = pending.data.get("mine", []) if pending.ok else []
    if mine:
        lines = [f"• *{r['role']}* in {_where(r['scope'])} for {r['for']}" for r in mine]
        blocks.append(_section("*Your pending requests*\n" + "\n".join(lines[:MAX_ROWS])))
    waiting = pending.data.get("waiting", []) if pending.ok else []
    if waiting:
        blocks.append({"type": "divider"})
        blocks.append(_section(f"*Waiting for your decision* ({len(waiting)})"))
        for r in waiting[:MAX_ROWS]:
            blocks.append(
                _section(
                    f"<@{r['requester']}> asks for *{r['role']}* in {_where(r['scope'])} for "
                    f"{r['for']}. Reason: {escape(r['reason'])}"
                )
            )
            blocks.append(decision_buttons(r["request_id"]))
    blocks += _latest_review(gate, user)
    return {"type": "home", "blocks": blocks[:100]}


def _latest_review(gate: Gate, user: str) -> list[dict[str, Any]]:
    """For those who may read the audit log (SPEC §5): the latest access review."""
    if not gate.decide(user, "audit:view").allowed:
        return []  # not offered, and no denial in the log for merely opening the tab
    latest = gate.submit(Principal.slack_user(user), "slack", "review.latest", {})
    review = latest.data.get("review") if latest.ok else None
    if review is None:
        return [{"type": "divider"}, _section("*Latest access review*\nNone has run yet.")]
    where = f" in <#{review.channel}>" if review.channel else ""
    text = (
        f"*Latest access review* #{review.id}, {review.created_at:%Y-%m-%d}{where}: "
        f"{review.totals.findings} grants to look at, {latest.data['open']} still open."
    )
    return [{"type": "divider"}, _section(text)]


def publish_home(client: WebClient, gate: Gate, user: str) -> None:
    """Draw `user`'s App Home afresh: when they open it, and after they act in it."""
    try:
        client.views_publish(user_id=user, view=home_view(gate, user))
    except Exception:
        log.exception("could not publish the App Home of %s", user)


def register(app: App, gate: Gate, client: WebClient, inbound: TakenOnce) -> None:
    @app.event("app_home_opened", middleware=[once_per_event(inbound)])
    def on_home_opened(event: dict[str, Any]) -> None:
        if event.get("tab") != "home":
            return
        publish_home(client, gate, str(event.get("user") or ""))
