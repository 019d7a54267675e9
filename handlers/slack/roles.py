"""Slack listeners for `/wa-role` and its confirmation buttons.

Thin by design: each listener turns the payload into one gate call and the
outcome into one message. Bolt has verified the request signature and its
timestamp before any of this runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from rbac_core import Gate
from rbac_core.principals import Principal

from ..commands.grammar import mentioned_users
from ..commands.roles import Reply, RoleCommand, reply_for
from .access import approvers_told, request_button
from .blocks import CANCEL_ACTION, CONFIRM_ACTION, clicked_value, message
from .stepup import STEP_UP_PROMPT, open_code_modal

log = logging.getLogger(__name__)

TROUBLE = "Something went wrong on our side and nothing was done; please try again."


class SlackDirectory:
    """Makes sure people named in a command are known, asking Slack about newcomers.

    Registering a newcomer is a write, so it is the gate's `user.seen` action and
    is audited; only the check that someone is already known is a plain read.
    """

    def __init__(self, gate: Gate, client: WebClient) -> None:
        self.gate = gate
        self.client = client
        self._known: set[str] = set()

    def ensure(self, user_id: str, name: str | None = None) -> None:
        """The sender of a signed request: Slack vouches for them."""
        self._register(user_id, user_id, name, "request")

    def _register(self, actor: str, user_id: str, name: str | None, via: str) -> None:
        # Users are never deleted (only deactivated), so once seen they need no
        # database round trip, and above all no write lock, on later commands.
        if user_id in self._known:
            return
        if not self.gate.knows(user_id):
            params = {"user": user_id, "name": name, "via": via}
            outcome = self.gate.submit(Principal.slack_user(actor), "slack", "user.seen", params)
            if outcome.status != "done":
                log.warning("could not register %s: %s", user_id, outcome.error_code)
                return
        self._known.add(user_id)

    def lookup_for(self, actor: str) -> Callable[[Mapping[str, object]], None]:
        """What a command of `actor` runs before the gate: register the person it names
        if Slack knows them; otherwise the gate will answer "unknown user"."""

        def lookup(params: Mapping[str, object]) -> None:
            user_id = params.get("user")
            if not isinstance(user_id, str) or user_id in self._known:
                return
            if self.gate.knows(user_id):
                self._known.add(user_id)
                return
            try:
                answer = self.client.users_info(user=user_id)
            except SlackApiError as exc:
                log.info("users.info refused %s: %s", user_id, exc.response.get("error"))
                return
            except Exception:  # network trouble: the gate refuses an unknown user anyway
                log.warning("users.info failed for %s", user_id, exc_info=True)
                return
            user = answer.get("user") or {}
            if user.get("deleted") or user.get("is_bot"):
                return
            self._register(actor, user_id, user.get("name"), "users.info")

        return lookup


def _users(reply: Reply, actor: str) -> set[str]:
    users = {actor}
    for source in (reply.data, reply.outcome.data if reply.outcome else {}):
        value = source.get("user") if isinstance(source, Mapping) else None
        if isinstance(value, str):
            users.add(value)
    return users


def ask_for_code(client: WebClient, command: dict[str, Any], reply: Reply) -> bool:
    """Open the 2FA modal when the gate asked for step-up; False to answer in text instead."""
    if reply.outcome is None or reply.outcome.status != "needs_2fa":
        return False
    return open_code_modal(
        client,
        str(command.get("trigger_id") or ""),
        str(command.get("command") or ""),
        command.get("text") or "",
        str(command.get("response_url") or ""),
    )


def register(
    app: App,
    gate: Gate,
    roles: RoleCommand,
    directory: SlackDirectory,
    audit_channel: str | None = None,
) -> None:
    @app.command("/wa-role")
    def role_command(ack: Ack, command: dict[str, Any]) -> None:
        actor = command.get("user_id", "")
        try:
            directory.ensure(actor, command.get("user_name"))
            text = command.get("text") or ""
            reply = roles.handle(
                Principal.slack_user(actor), "slack", text, directory.lookup_for(actor)
            )
            outcome = reply.outcome
            if outcome is not None and outcome.action == "access.request" and outcome.ok:
                notice = approvers_told(audit_channel)
                reply = Reply("text", f"{reply.text}\n{notice}", outcome=outcome, data=reply.data)
            users = _users(reply, actor) | mentioned_users(command.get("text") or "")
            if ask_for_code(directory.client, command, reply):
                ack(response_type="ephemeral", text=STEP_UP_PROMPT)
                return
            answer = message(reply, users)
            denied_self = reply.data.get("allowed") is False and reply.data.get("user") == actor
            if outcome is not None and outcome.action == "role.why" and denied_self:
                answer["blocks"].append(
                    request_button(str(reply.data["permission"]), str(reply.data["scope"]))
                )
            ack(**answer)
        except Exception:
            log.exception("/wa-role failed")
            ack(response_type="ephemeral", text=TROUBLE)

    def on_button(confirm: bool) -> Callable[..., None]:
        def listener(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
            ack()
            actor = body.get("user", {}).get("id", "")
            pending_id = clicked_value(body)
            try:
                outcome = (gate.confirm if confirm else gate.cancel)(
                    pending_id, Principal.slack_user(actor), "slack"
                )
            except Exception:
                log.exception("confirmation failed")
                respond(response_type="ephemeral", replace_original=False, text=TROUBLE)
                return
            reply = (
                reply_for(outcome)
                if outcome.status != "cancelled"
                else Reply("text", outcome.message, outcome=outcome)
            )
            if outcome.error_code == "pending_not_yours":
                # Someone else's click: tell them, leave the original alone.
                respond(replace_original=False, **message(reply, {actor}))
                return
            respond(replace_original=True, **message(reply, _users(reply, actor)))

        return listener

    app.action(CONFIRM_ACTION)(on_button(confirm=True))
    app.action(CANCEL_ACTION)(on_button(confirm=False))
