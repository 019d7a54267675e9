"""The access review in Slack: the report message, its pages, and the Revoke / Keep buttons.

A report is one channel message showing one page of findings (Slack allows 50
blocks; each finding takes two), with Previous / Next buttons that redraw it
in place, and, when it has more than one page, the whole list as a CSV file in
its thread, so nothing is ever cut off. Every click goes through the gate
(`review.revoke`, `review.keep`, `review.page`) and redraws the page it was on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from rbac_core import Gate, Outcome
from rbac_core.clock import Clock, utcnow
from rbac_core.principals import Principal
from rbac_core.review.building import KIND_TITLES, KINDS
from rbac_core.review.reading import Finding, Page

from ..commands.review_runs import Post
from .blocks import clicked_value, escape
from .stepup import STEP_UP_PROMPT, Resume, answer_through, ask_for_code

log = logging.getLogger(__name__)

REVOKE_ACTION = "wa_review_revoke"
KEEP_ACTION = "wa_review_keep"
PAGE_ACTION = "wa_review_page"
RESUME_KIND = "review_finding"
TROUBLE = "Something went wrong on our side and nothing was done; please try again."


def _day(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d")


def _scope(scope: str) -> str:
    return "the whole workspace" if scope == "*" else scope


def _why(f: Finding, now: datetime) -> str:
    if f.kind == "deactivated":
        return "deactivated (here or in Slack) but still holds this grant"
    if f.kind == "no_2fa":
        return "the role requires 2FA and they have not turned it on"
    if f.kind == "inactive":
        if f.last_active_at is None:
            return "no activity on record"
        days = (now - f.last_active_at).days
        return f"last active {_day(f.last_active_at)} ({days} days ago)"
    return f"expires {_day(f.expires_at)}"


def _handled(f: Finding) -> str:
    verb = {"revoked": "Revoked", "kept": "Kept"}.get(f.status, f.status.title())
    when = f.handled_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if f.handled_at else ""
    return f"{verb} by <@{f.handled_by}> {when}".strip()


def _finding_blocks(f: Finding, now: datetime) -> list[dict[str, Any]]:
    text = (
        f"*{f.position}.* <@{f.user}> · *{escape(f.role)}* in {escape(_scope(f.scope))} · "
        f"_{KIND_TITLES[f.kind]}_: {_why(f, now)} · granted {_day(f.granted_at)}"
    )
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if f.status != "open":
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"✅ {_handled(f)}"}]}
        )
        return blocks
    keep_label = "Extend 30 days" if f.kind == "expiring" else "Keep 30 days"
    blocks.append(
        {
            "type": "actions",
            "block_id": f"wa_review_f{f.id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": REVOKE_ACTION,
                    "text": {"type": "plain_text", "text": "Revoke"},
                    "style": "danger",
                    "value": str(f.id),
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Revoke this grant?"},
                        "text": {
                            "type": "mrkdwn",
                            "text": f"<@{f.user}> loses *{escape(f.role)}* in "
                            f"{escape(_scope(f.scope))} now.",
                        },
                        "confirm": {"type": "plain_text", "text": "Revoke"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                        "style": "danger",
                    },
                },
                {
                    "type": "button",
                    "action_id": KEEP_ACTION,
                    "text": {"type": "plain_text", "text": keep_label},
                    "value": str(f.id),
                },
            ],
        }
    )
    return blocks


def render(page: Page, now: datetime, *, attached: bool = False) -> dict[str, Any]:
    """The message for one page of a review: summary, findings, and page buttons."""
    review, totals = page.review, page.review.totals
    title = (
        f"Weekly access review #{review.id}"
        if review.period
        else f"Access review #{review.id} (on demand)"
    )
    lines = [
        f"*{totals.findings}* grants to look at, held by *{totals.users}* people "
        f"({totals.grants_checked} live grants checked; inactive means nothing done for "
        f"{review.days} days)."
    ]
    lines += [f"• {totals.by_kind[k]} {KIND_TITLES[k]}" for k in KINDS if totals.by_kind[k]]
    if not totals.findings:
        lines = [f"Nothing to review: all {totals.grants_checked} live grants look right."]
    footer = f"Run {_day(review.created_at)} · page {page.number + 1} of {page.pages}"
    if attached:
        footer += " · the full list is attached as CSV in the thread"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]},
    ]
    for finding in page.findings:
        blocks += _finding_blocks(finding, now)
    nav = []
    if page.number > 0:
        nav.append(_page_button("Previous page", review.id, page.number - 1))
    if page.number + 1 < page.pages:
        nav.append(_page_button("Next page", review.id, page.number + 1))
    if nav:
        blocks.append({"type": "actions", "block_id": "wa_review_pages", "elements": nav})
    summary = f"{title}: {totals.findings} grants to look at"
    return {"text": summary, "blocks": blocks}


def _page_button(label: str, review_id: int, number: int) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": PAGE_ACTION,
        "text": {"type": "plain_text", "text": label},
        "value": f"{review_id}:{number}",
    }


def post_report(
    client: WebClient, channel: str, page: Page, now: datetime, csv_text: str | None
) -> str:
    """Post page 1 to `channel` and the CSV, if any, in its thread; returns the message ts.

    Raises when Slack gives no ts: the report is then not known to be out.
    """
    answer = client.chat_postMessage(
        channel=channel, **render(page, now, attached=csv_text is not None)
    )
    ts = str(answer.get("ts") or "")
    if not ts:
        raise RuntimeError("chat.postMessage answered without a message ts")
    if csv_text is not None:
        try:
            client.files_upload_v2(
                channel=channel,
                thread_ts=ts,
                content=csv_text,
                filename=f"access-review-{page.review.id}.csv",
                title=f"Access review #{page.review.id}: all findings",
            )
        except Exception:
            log.error("could not attach the CSV of access review #%s", page.review.id)
    return ts


def slack_poster(client: WebClient, channel: str, clock: Clock) -> Post:
    """Posts a review's report to `channel` (see post_report) for review_runs."""

    def post(first: Page, csv_text: str | None) -> tuple[str, str]:
        return channel, post_report(client, channel, first, utcnow(clock), csv_text)

    return post


def register(app: App, gate: Gate) -> Resume:
    """Listeners for the report's buttons; returns the resume for step-up 2FA."""

    def redraw(outcome: Outcome, respond: Respond | Any) -> None:
        """Show the decision on the report: the page the finding is on, drawn afresh."""
        shown = outcome.data.get("page")
        if isinstance(shown, Page):
            respond(replace_original=True, **render(shown, _now(gate)))

    def decide(action: str, actor: str, finding: str, respond: Respond | Any) -> Outcome:
        outcome = gate.submit(Principal.slack_user(actor), "slack", action, {"finding": finding})
        if outcome.status == "done":
            redraw(outcome, respond)
            respond(response_type="ephemeral", replace_original=False, text=outcome.message)
        elif outcome.status != "needs_2fa":
            respond(response_type="ephemeral", replace_original=False, text=outcome.message)
        return outcome

    def on_finding(action: str) -> Any:
        def listener(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
            ack()
            actor = str(body.get("user", {}).get("id", ""))
            finding = clicked_value(body)
            try:
                outcome = decide(action, actor, finding, respond)
                if outcome.status == "needs_2fa":
                    opened = ask_for_code(
                        client,
                        str(body.get("trigger_id") or ""),
                        "Extending this grant",
                        {
                            "kind": RESUME_KIND,
                            "action": action,
                            "finding": finding,
                            "response_url": str(body.get("response_url") or ""),
                        },
                    )
                    text = STEP_UP_PROMPT if opened else outcome.message
                    respond(response_type="ephemeral", replace_original=False, text=text)
            except Exception:
                log.exception("%s failed", action)
                respond(response_type="ephemeral", replace_original=False, text=TROUBLE)

        return listener

    app.action(REVOKE_ACTION)(on_finding("review.revoke"))
    app.action(KEEP_ACTION)(on_finding("review.keep"))

    @app.action(PAGE_ACTION)
    def on_page(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        actor = str(body.get("user", {}).get("id", ""))
        review, _, number = clicked_value(body).partition(":")
        try:
            outcome = gate.submit(
                Principal.slack_user(actor),
                "slack",
                "review.page",
                {"review": review, "page": number},
            )
            shown = outcome.data.get("page")
            if isinstance(shown, Page):
                respond(replace_original=True, **render(shown, _now(gate)))
            else:
                respond(response_type="ephemeral", replace_original=False, text=outcome.message)
        except Exception:
            log.exception("turning a review page failed")
            respond(response_type="ephemeral", replace_original=False, text=TROUBLE)

    def resume(actor: str, meta: dict[str, Any]) -> None:
        action = str(meta.get("action"))
        if action not in ("review.revoke", "review.keep") or not meta.get("response_url"):
            return
        decide(action, actor, str(meta.get("finding")), answer_through(str(meta["response_url"])))

    return resume


def _now(gate: Gate) -> datetime:
    return datetime.fromtimestamp(gate.clock(), UTC)
