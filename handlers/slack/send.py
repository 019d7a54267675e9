"""Slack listener for `/wa-send`: the answer says queued (with the message's id) only once
the send, its decision and its audit entry are committed; a failure comes later, as a DM
from the outbox (`whatsapp.send_failed`)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App

from rbac_core.principals import Principal

from ..commands.send import COMMAND, SendCommand
from .blocks import message
from .roles import TROUBLE, SlackDirectory

log = logging.getLogger(__name__)


def register(
    app: App, send: SendCommand, directory: SlackDirectory, default_from: str | None
) -> None:
    @app.command(COMMAND)
    def send_command(ack: Ack, command: dict[str, Any]) -> None:
        actor = command.get("user_id", "")
        try:
            directory.ensure(actor, command.get("user_name"))
            text = command.get("text") or ""
            reply = send.handle(Principal.slack_user(actor), "slack", text, default_from)
            ack(**message(reply, {actor}))
        except Exception:
            log.exception("%s failed", COMMAND)
            ack(response_type="ephemeral", text=TROUBLE)
