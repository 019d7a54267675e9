"""Slack listener for `/wa-2fa`: the enrolment secret goes by DM (a lockout's alert is a
notice of the `2fa.verify` action, delivered through the outbox)."""

from __future__ import annotations

import io
import logging
from typing import Any

import segno
from slack_bolt import Ack, App
from slack_sdk import WebClient

from rbac_core.principals import Principal

from ..commands.roles import Reply
from ..commands.twofa import TwoFactorCommand
from .blocks import escape, message
from .roles import TROUBLE, SlackDirectory, ask_for_code
from .stepup import STEP_UP_PROMPT

log = logging.getLogger(__name__)


def register(
    app: App,
    twofa: TwoFactorCommand,
    directory: SlackDirectory,
    client: WebClient,
) -> None:
    @app.command("/wa-2fa")
    def twofa_command(ack: Ack, command: dict[str, Any]) -> None:
        actor = command.get("user_id", "")
        try:
            directory.ensure(actor, command.get("user_name"))
            reply = twofa.handle(Principal.slack_user(actor), "slack", command.get("text") or "")
            if "uri" in reply.data:
                reply = _send_secret(client, actor, reply)
            if ask_for_code(client, command, reply):
                ack(response_type="ephemeral", text=STEP_UP_PROMPT)
                return
            ack(**message(reply, {actor}))
        except Exception:
            log.exception("/wa-2fa failed")
            ack(response_type="ephemeral", text=TROUBLE)


def _send_secret(client: WebClient, actor: str, reply: Reply) -> Reply:
    """Deliver the enrolment secret by DM, the only place it is ever shown."""
    uri = str(reply.data["uri"])
    secret = str(reply.data["secret"])
    try:
        dm = client.conversations_open(users=actor)["channel"]["id"]
        client.chat_postMessage(
            channel=dm,
            text="Your wa-access 2FA secret (shown once)",
            blocks=[
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": (
                            "*Set up two-factor authentication*\n"
                            "Add this account to your authenticator app with the link below, "
                            "or type "
                            f"the key by hand:\n`{escape(secret)}`\n{escape(uri)}\n"
                            "Then run `/wa-2fa verify CODE` with the code the app shows."
                        ),
                    },
                },
            ],
        )
    except Exception:
        log.warning("could not DM the 2FA secret to %s", actor)
        return Reply(
            "error",
            "I could not send you a DM with your 2FA secret; open a DM with "
            "wa-access and run `/wa-2fa enroll` again.",
        )
    try:
        client.files_upload_v2(
            channel=dm,
            content=qr_png(uri),
            filename="wa-access-2fa.png",
            title="Scan with your authenticator app",
        )
    except Exception:  # the key and link above still work without the picture
        log.warning("could not upload the 2FA QR code for %s", actor)
    return Reply(
        "text", "I sent you a DM with your 2FA secret. " + reply.text, outcome=reply.outcome
    )


def qr_png(uri: str) -> bytes:
    """The otpauth URI as a QR code image (segno: pure Python, no image library)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="png", scale=6, border=4)
    return buffer.getvalue()
