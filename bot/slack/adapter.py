"""What hands Slack's requests to Bolt (from bot/slack/door.py), kept thin.

Bolt ships a Flask adapter; this one does the same job with less work per
request, because `/slack/events` is the hottest path of the app:

* only the headers Bolt reads are passed on (content type, signature,
  timestamp, retry markers). Copying every header through werkzeug's
  `EnvironHeaders` and Bolt's normaliser cost about as much as checking the
  signature.
  Bolt's internal `x-slack-bolt-lazy-*` headers are never taken from the
  wire: they exist for a process re-invoking itself, and a caller setting
  them could only ask Bolt to skip the listener's acknowledgement;
* the query string, empty on every request Slack sends here, is parsed only
  when present;
* the answer is Bolt's status, body and headers as they are (bot/slack/door.py).

Nothing here parses or trusts the request: `LeanApp` checks the signature and
timestamp with Bolt's verifier before the body is parsed (see
bot/slack/signature.py for why Bolt's own order is changed).

`LeanApp` is Bolt's `App` without two costs per request that this app gets
nothing for (measured by `python -m bench --only slack-instructions`, which
counts instructions and so is not at the mercy of a noisy machine: together
they were 8.9% of a whole `/wa-role show`, 1,707k of its instructions against
1,555k without them):

* Bolt builds a new `WebClient` for every request, so that a listener, or
  Bolt itself, may swap the token of that request's client safely. Bolt does
  so only for multi-workspace installs and workflow functions; `LeanApp`
  refuses both, so there is one bot token, and every listener and job shares
  the app's one client. (Bolt's per-request client also sent the request's
  `team_id` with every call, which matters only to an org-wide Enterprise
  Grid install; a single-workspace token already names its team. Lazy
  listeners get a copy of the client, as they got a copy before.)
* Every listener Bolt checks runs its built-in matcher through the keyword
  injection that listeners use, which builds some thirty arguments (say,
  respond, payload views...) to pass one, `body`. Bolt checks listeners in
  order until one matches, so a Home-tab event paid that for every listener
  registered before it. `LeanApp` calls those matchers with the body alone.
  The listener that matched is called the same way: `LeanListener` builds
  only the arguments its function names (`ack`, `command`, `body`...), the
  same objects Bolt would pass, where Bolt built all thirty for every call
  (5% of a `/wa-role show`); a name it does not know goes through Bolt's own
  injection.

They override internals of `slack_bolt.App` (`_init_context`,
`_register_listener`) and `CustomListener.run_ack_function`.
tests/test_slack_roles.py compares the context, the arguments each listener
gets and, for a sample of every kind of payload this app handles, the matching
with Bolt's own, and sends requests through to check the shared client is
never changed, so an upgrade of Bolt that breaks an assumption fails there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse, Respond
from slack_bolt.listener import CustomListener
from slack_bolt.listener_matcher import ListenerMatcher
from slack_bolt.listener_matcher.builtins import BuiltinListenerMatcher
from slack_bolt.logger import get_bolt_app_logger, get_bolt_logger
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware import AttachingFunctionToken, MultiTeamsAuthorization, SslCheck
from slack_bolt.request.payload_utils import to_action, to_command, to_event, to_view

from ..logs import note
from ..refusals import Refusals
from ..request_body import read_environ_body
from .shape import ParseSignedBody, ephemeral
from .signature import SignatureCheck

log = logging.getLogger("wa_access.slack")

# The headers Bolt and our listeners read, as WSGI environ keys.
_HEADERS = (
    ("content-type", "CONTENT_TYPE"),
    ("x-slack-signature", "HTTP_X_SLACK_SIGNATURE"),
    ("x-slack-request-timestamp", "HTTP_X_SLACK_REQUEST_TIMESTAMP"),
    ("x-slack-retry-num", "HTTP_X_SLACK_RETRY_NUM"),
    ("x-slack-retry-reason", "HTTP_X_SLACK_RETRY_REASON"),
)


class SafeRespond(Respond):
    """Bolt's `respond`, for which a response_url that fails is a warning, not an error.

    The action a listener answers has already gone through the gate, so there is
    nothing to undo; a network failure or an unreachable URL is logged (never the
    URL itself, which carries a token) and the listener goes on.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            log.warning("slack: could not answer through the response_url (%s)", type(exc).__name__)
            return None


class SignedContext(BoltContext):
    """Bolt's context, whose `respond` is a `SafeRespond`."""

    @property
    def respond(self) -> Respond | None:
        if "respond" not in self:
            self["respond"] = SafeRespond(
                response_url=self.response_url, proxy=self.client.proxy, ssl=self.client.ssl
            )
        return self["respond"]  # type: ignore[no-any-return]

    def to_copyable(self) -> BoltContext:
        return SignedContext(super().to_copyable())


class UnparsedRequest(BoltRequest):
    """A BoltRequest built with its body unparsed, so that the signature is checked first.

    It carries the body as the bytes that came in (`raw_bytes`): the signature
    (bot/slack/signature.py) is over those, and only once it holds are they
    decoded and parsed into `body` (bot/slack/shape.py), so a signed body that
    is not UTF-8 is a 400, not a signature that seems wrong.

    Bolt gives a lazy listener a copy of the request made by parsing the raw body
    again with Bolt's parser, which takes a command holding the word "payload"
    for an empty interactivity payload; the copy keeps our parse instead.
    """

    def __init__(self, *, raw_bytes: bytes | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.raw_bytes = raw_bytes
        self.context.__class__ = SignedContext  # the same dict; SignedContext adds no state

    def to_copyable(self) -> BoltRequest:
        copy = UnparsedRequest(
            body="",
            query=self.query,
            headers=self.headers,
            context=self.context.to_copyable(),
            mode=self.mode,
        )
        copy.raw_body = self.raw_body
        copy.body = self.body  # Bolt deep-copies the whole copy before handing it on
        return copy


def to_bolt_request(environ: dict[str, Any]) -> BoltRequest:
    headers: dict[str, str | Sequence[str]] = {
        name: [environ[key]] for name, key in _HEADERS if key in environ
    }
    query = environ.get("QUERY_STRING")
    # Built with an empty body, so that nothing is parsed yet: `LeanApp` checks the
    # signature over the raw bytes first, then decodes and parses them
    # (bot/slack/signature.py, bot/slack/shape.py). read_environ_body refuses a body
    # over the cap, however framed.
    return UnparsedRequest(
        body="",
        # PEP 3333 hands the query over as latin-1: its bytes, read as UTF-8.
        query=str(query).encode("latin-1", "replace").decode("utf-8", "replace") if query else None,
        headers=headers,
        raw_bytes=read_environ_body(environ),
    )


class SlackEndpoint:
    """Every command, interaction and event, through one Bolt app."""

    def __init__(self, app: App) -> None:
        self.app = app

    def handle(self, environ: dict[str, Any]) -> BoltResponse:
        req = to_bolt_request(environ)
        answer = self.app.dispatch(req)
        actor = req.context.get("user_id")  # only set once the request proved signed
        if isinstance(actor, str):
            note(actor=actor)
        return answer


class BodyMatcher(ListenerMatcher):
    """One of Bolt's built-in matchers (`func(body) -> bool`), called with the body alone."""

    def __init__(self, func: Callable[[dict[str, Any]], bool]) -> None:
        self.func = func

    def matches(self, req: BoltRequest, resp: BoltResponse) -> bool:
        return bool(self.func(req.body))


_Argument = Callable[[BoltRequest, BoltResponse], Any]
# What Bolt's keyword injection passes for each name our listeners use
# (slack_bolt.kwargs_injection.build_required_kwargs), one at a time.
_ARGUMENTS: dict[str, _Argument] = {
    "ack": lambda req, resp: req.context.ack,
    "body": lambda req, resp: req.body,
    "command": lambda req, resp: to_command(req.body),
    "view": lambda req, resp: to_view(req.body),
    "action": lambda req, resp: to_action(req.body),
    "event": lambda req, resp: to_event(req.body),
    "respond": lambda req, resp: req.context.respond,
    "say": lambda req, resp: req.context.say,
    "client": lambda req, resp: req.context.client,
    "context": lambda req, resp: req.context,
    "request": lambda req, resp: req,
    "response": lambda req, resp: resp,
}


class LeanListener(CustomListener):
    """Bolt's listener, passing its function only the arguments it names (see above)."""

    def run_ack_function(self, *, request: BoltRequest, response: BoltResponse) -> Any:
        names = self.arg_names
        if not all(name in _ARGUMENTS for name in names):
            return super().run_ack_function(request=request, response=response)
        return self.ack_function(**{name: _ARGUMENTS[name](request, response) for name in names})


class _DropMessage(logging.Filter):
    """Drops one exact message: silencing Bolt's logger whole would hide real warnings."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


class LeanApp(App):
    """Bolt's App, sharing the app's WebClient and matching on the body alone (see above)."""

    def __init__(self, **kwargs: Any) -> None:
        for switch in ("request_verification_enabled", "ssl_check_enabled"):
            if not kwargs.pop(switch, True):
                raise ValueError(f"LeanApp always checks signatures: {switch}=False is refused")
        # Bolt's two are replaced by the same checks in the safe order (see
        # bot/slack/signature.py): signature, then parsing, then ssl_check.
        # Given a client, Bolt still reads SLACK_BOT_TOKEN from the environment and
        # warns, in every gunicorn worker, that it will not use it: that is the intent.
        logger = kwargs.get("logger") or get_bolt_logger(App)
        unused_token = _DropMessage(warning_client_prioritized_and_token_skipped())
        logger.addFilter(unused_token)
        try:
            super().__init__(request_verification_enabled=False, ssl_check_enabled=False, **kwargs)
        finally:
            logger.removeFilter(unused_token)
        refusals = Refusals("slack")
        self._middleware_list[:0] = [
            SignatureCheck(self._signing_secret, refusals, base_logger=self._base_logger),
            ParseSignedBody(),
            SslCheck(verification_token=self._verification_token, base_logger=self._base_logger),
        ]
        # The middleware that would write a token into the shared client.
        writers = [
            type(m).__name__
            for m in self._middleware_list
            if isinstance(m, MultiTeamsAuthorization | AttachingFunctionToken)
        ]
        if writers:
            raise ValueError(
                f"LeanApp shares one WebClient, and {', '.join(writers)} would change its "
                "token per request: give it one bot token and no workflow functions"
            )

    def _handle_unmatched_requests(self, req: BoltRequest, resp: BoltResponse) -> BoltResponse:
        body = req.body
        command = body.get("command")
        if isinstance(command, str):
            # A slash command pointed here that this app does not serve: Slack shows
            # a 404 as a bare failure, so say which command it was.
            return ephemeral(f"This app does not answer `{command}`.")
        # Bolt's own warning quotes what people typed (a dialog's fields, a search).
        # Name only the kind of request and the ids this app would have registered.
        event, view, actions = body.get("event"), body.get("view"), body.get("actions")
        names = [
            body.get("type"),
            event.get("type") if isinstance(event, dict) else None,
            body.get("callback_id"),
            view.get("callback_id") if isinstance(view, dict) else None,
            *(a.get("action_id") for a in actions or () if isinstance(a, dict)),
        ]
        described = ", ".join(str(n)[:60] for n in names if isinstance(n, str) and n)
        log.warning("slack: no listener for this request (%s)", described or "nothing named")
        return resp

    def _init_context(self, req: BoltRequest) -> None:
        logger = get_bolt_app_logger(app_name=self.name, base_logger=self._base_logger)
        req.context["logger"] = logger
        req.context["token"] = self._token
        req.context["client"] = self._client
        req.context["listener_runner"] = self.listener_runner

    def _register_listener(
        self, functions: Any, primary_matcher: ListenerMatcher, *args: Any, **kwargs: Any
    ) -> Any:
        if isinstance(primary_matcher, BuiltinListenerMatcher) and primary_matcher.arg_names == [
            "body"
        ]:
            primary_matcher = BodyMatcher(primary_matcher.func)  # type: ignore[arg-type]
        registered = super()._register_listener(functions, primary_matcher, *args, **kwargs)
        listener = self._listeners[-1]
        if type(listener) is CustomListener:
            listener.__class__ = LeanListener  # the same object; LeanListener adds no state
        return registered
