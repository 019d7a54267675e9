"""The Bolt app: Slack's signature check, then our listeners.

`process_before_response=True`: every listener finishes its work (one gate
call, a few milliseconds) before the HTTP answer, and the answer carries the
reply. Bolt's default instead hands listeners to a thread pool and polls for
`ack()` in 10 ms sleeps, which shared/PROTOCOLS.md measured at 0.04x the
throughput of a bare Flask endpoint against about 0.48x for this mode; with
replies this cheap there is nothing to gain from answering first, and much to
lose under load. (`python -m bench --only slack` measures the whole round trip.)
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from handlers.slack.access import DECISION_KIND, register_request_form
from handlers.slack.access import register as register_access
from handlers.slack.audit import register as register_audit
from handlers.slack.home import publish_home
from handlers.slack.home import register as register_home
from handlers.slack.review import RESUME_KIND as REVIEW_KIND
from handlers.slack.review import register as register_review
from handlers.slack.roles import SlackDirectory
from handlers.slack.roles import register as register_roles
from handlers.slack.send import register as register_send
from handlers.slack.stepup import COMMAND, Rerun, rerun_command
from handlers.slack.stepup import register as register_stepup
from handlers.slack.twofa import register as register_twofa
from rbac_core.principals import Principal

from ..config import Settings
from ..runtime import Runtime
from .adapter import LeanApp
from .shape import ephemeral
from .token import explain_token_failures

SLACK_TIMEOUT_SECONDS = 5
FAILURE_TEXT = (
    "Something went wrong on our side, and it was logged for the operators. "
    "Check whether your change took effect before you try again."
)
log = logging.getLogger("wa_access.slack")


def slack_client(settings: Settings) -> WebClient:
    """The Web API client: bounded timeouts, and Slack's Retry-After obeyed on HTTP 429."""
    client = WebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=SLACK_TIMEOUT_SECONDS,
    )
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    return client


def bolt_app(settings: Settings, client: WebClient) -> App:
    """The Bolt app as configured for this product, before any listener is registered."""
    # slack_sdk and Bolt log request and response bodies at DEBUG: those carry 2FA
    # codes and secrets, so they never log below INFO whatever the root level.
    for name in ("slack_sdk", "slack_bolt", "wa_access.slack"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
    # A failing response_url is logged by our callers as a warning, without the
    # URL (it carries a token); slack_sdk's own error line quotes it.
    logging.getLogger("slack_sdk.webhook").setLevel(logging.CRITICAL)
    app = LeanApp(
        signing_secret=settings.slack_signing_secret,
        client=client,
        process_before_response=True,
        token_verification_enabled=False,
        # Only for Slack's workflow functions (`function_executed`), which this app
        # does not offer: skip its middleware on every request.
        attaching_function_token_enabled=False,
        logger=logging.getLogger("wa_access.slack"),
    )
    explain_token_failures(app)
    app.error(answer_failure)
    return app


def answer_failure(error: Exception, body: dict[str, Any]) -> BoltResponse:
    """The last resort when a listener or middleware raises: a bug, never bad input.

    Bad input is answered where it is read (bot/slack/shape.py, the listeners),
    so what reaches here is logged with its traceback for the operators, though
    never with the body, which may hold a 2FA code. Slack treats a 500 as a bare
    failure; the person gets a 200 and, for a command, a sentence instead. (A
    modal's submission then closes as if it went through: the field errors a
    modal could show need to name one of its blocks, which only its listener knows.)
    """
    log.error("a Slack listener failed", exc_info=error)
    if isinstance(body.get("command"), str):
        return ephemeral(FAILURE_TEXT)
    return BoltResponse(status=200, body="")


def build_slack_app(runtime: Runtime) -> App:
    settings = runtime.settings
    client = slack_client(settings)
    app = bolt_app(settings, client)
    directory = SlackDirectory(runtime.gate, client)
    register_roles(app, runtime.gate, runtime.roles, directory, settings.audit_channel)
    register_twofa(app, runtime.twofa, directory, client)
    register_send(app, runtime.send, directory, settings.whatsapp_phone_number_id)
    resume_decision = register_access(
        app, runtime.gate, client, lambda user: publish_home(client, runtime.gate, user)
    )
    register_request_form(app, runtime.gate, client, settings.audit_channel)
    register_home(app, runtime.gate, client, runtime.inbound)
    resume_review = register_review(app, runtime.gate)
    register_audit(app, runtime.audit, client)
    reruns: dict[str, Rerun] = {
        "/wa-role": lambda actor, text: runtime.roles.handle(
            Principal.slack_user(actor), "slack", text, directory.lookup_for(actor)
        ),
        "/wa-2fa": lambda actor, text: runtime.twofa.handle(
            Principal.slack_user(actor), "slack", text
        ),
    }
    register_stepup(
        app,
        runtime.gate,
        {
            COMMAND: rerun_command(reruns),
            DECISION_KIND: resume_decision,
            REVIEW_KIND: resume_review,
        },
    )
    return app
