"""Whether Slack accepts the bot token: said once at start-up, and to each person it stops.

Bolt authorises every request by calling `auth.test` with the bot token until
one call succeeds. With a placeholder or revoked token that call fails on every
request, and people used to see only "Something went wrong on our side" (an
unreachable Slack even raised out of Bolt's middleware). Operators now get one
line at start-up saying whether Slack accepted the token and, if not, why; a
person whose request cannot be served is told the same reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.middleware.authorization import SingleTeamAuthorization
from slack_bolt.middleware.authorization.internals import (
    _is_no_auth_required,
    _is_no_auth_test_call_required,
)
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from .shape import ephemeral

log = logging.getLogger("wa_access.slack")

RECHECK_SECONDS = 30.0
"""How long a failed check answers for itself: an unreachable Slack is not asked
again (a 5-second timeout) on every request in the meantime."""

_REVOKED = {"token_revoked", "token_expired", "account_inactive", "app_uninstalled"}
_INVALID = {"invalid_auth", "not_authed", "not_allowed_token_type"}


@dataclass(frozen=True)
class TokenCheck:
    """The answer of one `auth.test`: `line` for operators, `answer` for people."""

    ok: bool
    line: str
    answer: str
    response: SlackResponse | None = None


def _refused(code: str) -> TokenCheck:
    if code in _INVALID:
        why = "it is not a valid bot token: set it to the app's Bot User OAuth Token (xoxb-…)"
    elif code in _REVOKED:
        why = "it was revoked or the app was uninstalled: reinstall the app and use its new token"
    else:
        why = "see Slack's documentation of that error"
    return TokenCheck(
        False,
        f"Slack refused SLACK_BOT_TOKEN ({code}): {why}.",
        f"wa-access cannot act in Slack: Slack refused its bot token ({code}). "
        "Nothing was done; please tell the operators who run wa-access.",
    )


def check_token(client: WebClient) -> TokenCheck:
    """Ask Slack once; never raises, never names the token."""
    try:
        response = client.auth_test()
    except SlackApiError as exc:
        data = exc.response.data if exc.response is not None else None
        code = data.get("error") if isinstance(data, dict) else None
        return _refused(str(code or "unknown_error"))
    except Exception as exc:  # unreachable, timed out, TLS: the Web API never answered
        return TokenCheck(
            False,
            f"Slack's Web API at {client.base_url} is unreachable ({type(exc).__name__}); "
            "requests will be refused until it answers.",
            "wa-access cannot reach Slack right now, so nothing was done. "
            "Try again in a minute; if it lasts, tell the operators.",
        )
    team, user = response.get("team"), response.get("user_id")
    return TokenCheck(
        True, f"Slack accepted the bot token (workspace {team}, bot user {user}).", "", response
    )


class ExplainedAuthorization(SingleTeamAuthorization):
    """Bolt's single-workspace authorization, answering a failed `auth.test` with its reason."""

    def __init__(self, base_logger: logging.Logger | None = None) -> None:
        super().__init__(base_logger=base_logger)
        self._failed: tuple[float, TokenCheck] | None = None
        self._lock = threading.Lock()

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        needs_check = not (_is_no_auth_required(req) or _is_no_auth_test_call_required(req))
        if needs_check and self.auth_test_result is None:
            check = self._check(req.context.client)
            if not check.ok:
                if isinstance(req.body.get("command"), str):
                    return ephemeral(check.answer)
                return BoltResponse(status=200, body=check.answer)
            self.auth_test_result = check.response
        return super().process(req=req, resp=resp, next=next)

    def _check(self, client: WebClient) -> TokenCheck:
        with self._lock:
            now = time.monotonic()
            if self._failed is not None and now - self._failed[0] < RECHECK_SECONDS:
                return self._failed[1]
            check = check_token(client)
            if check.ok:
                self._failed = None
            else:
                if self._failed is None or self._failed[1].line != check.line:
                    log.error("%s", check.line)
                self._failed = (now, check)
            return check


def explain_token_failures(app: App) -> None:
    """Swap Bolt's SingleTeamAuthorization in `app` for ExplainedAuthorization."""
    middleware: list[Any] = app._middleware_list
    for i, step in enumerate(middleware):
        if type(step) is SingleTeamAuthorization:
            middleware[i] = ExplainedAuthorization(base_logger=app._base_logger)
            return
    raise ValueError("this Bolt app has no single-workspace authorization to explain")
