"""What a signed Slack body must be before Bolt reads it: UTF-8, parsable, Slack-shaped.

Only a body whose signature held (bot/slack/signature.py) gets this far, so a
forger cannot make anything here run. Bolt's own parser takes any body holding
the word "payload" for an interactivity payload, and its matchers and our
listeners read fields by the type Slack sends them with: a body that breaks
those would raise further in. So `ParseSignedBody` decodes the bytes (a signed
body that is not UTF-8 gets a 400 with JSON: there is no command to answer),
parses them with our parser, checks the fields Bolt and the listeners read,
then runs Bolt's context builder. A body that fails gets a 400 with JSON, or,
for a slash command, an ephemeral answer that Slack shows its sender.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes, urlsplit

from slack_bolt import BoltRequest, BoltResponse
from slack_bolt.middleware import Middleware
from slack_bolt.request.internals import build_context

from handlers.slack.stepup import answer_by_dm
from rbac_core.values import is_user_id

from ..json_body import Unreadable, load_json

# The same logger as the signature's refusals: both are requests turned away at the door.
log = logging.getLogger("wa_access.refusals")

# Fields that Bolt's matchers and our listeners read, with the type they take
# them to have. Slack always sends them so; a body that breaks one of these is
# not a Slack payload, and is refused here rather than raising further in.
_STRINGS = (
    "type",
    "command",
    "text",
    "user_id",
    "user_name",
    "channel_id",
    "team_id",
    "trigger_id",
    "response_url",
    "api_app_id",
    "callback_id",
    "challenge",
    "event_id",
)
_OBJECTS_OR_NULL = ("team", "channel", "container", "message", "enterprise", "state")
_NEVER_NULL = ("user", "actions", "view", "event")
# Fields Bolt reads as objects or lists: never in a slash command's form fields.
_STRUCTURED = frozenset(
    (
        "type",
        "event",
        "view",
        "actions",
        "user",
        "state",
        "message",
        "container",
        "team",
        "channel",
        "enterprise",
        "authorizations",
        "response_urls",
        "payload",
    )
)
_ACTION_STRINGS = ("action_id", "block_id", "value", "type")
_VIEW_STRINGS = ("callback_id", "type", "private_metadata", "id", "hash")
_EVENT_STRINGS = ("type", "tab", "subtype")  # `user`, `channel` are objects in some events


def _wrong(
    container: dict[str, Any], keys: tuple[str, ...], kinds: type | tuple[type, ...]
) -> str | None:
    return next((k for k in keys if k in container and not isinstance(container[k], kinds)), None)


def _url_problem(url: Any) -> str | None:
    """A response_url must be http(s) with a host; IPv6 brackets get the full parse.

    Cheap on purpose (every command carries one, and each is new): answering
    through a URL that still fails is only a warning (bot/slack/adapter.SafeRespond).
    """
    if url is None:
        return None
    scheme, sep, rest = url.partition("://")
    if scheme not in ("https", "http") or not sep or not rest or rest[0] in "/?#":
        return "`response_url` is not a URL"
    if "[" in rest or "]" in rest:
        try:
            if not urlsplit(url).hostname:
                return "`response_url` is not a URL"
        except ValueError:
            return "`response_url` is not a URL"
    return None


def form_problem(fields: dict[str, str]) -> str | None:
    """What makes plain form fields unlike a slash command (or `ssl_check`), or None.

    Slack sends form fields only for those two; the values are strings by
    construction, but a field that Bolt reads as an object (`event`, `view`...)
    must not be there at all.
    """
    if "command" not in fields and "ssl_check" not in fields:
        return "form fields that are neither a slash command nor an ssl_check"
    if structured := fields.keys() & _STRUCTURED:
        return f"`{min(structured)}` has no place in a slash command"
    return _url_problem(fields.get("response_url"))


def payload_problem(body: dict[str, Any]) -> str | None:
    """What makes `body` unlike any Slack payload this app reads, or None."""
    if (key := _wrong(body, _STRINGS, str)) is not None:
        return f"`{key}` is not a string"
    if (key := _wrong(body, _OBJECTS_OR_NULL, (dict, type(None)))) is not None:
        return f"`{key}` is not an object"
    if (key := next((k for k in _NEVER_NULL if k in body and body[k] is None), None)) is not None:
        return f"`{key}` is null"
    if not isinstance(body.get("type"), str) and not isinstance(body.get("command"), str):
        return "it has neither a `type` nor a `command`"
    if (problem := _url_problem(body.get("response_url"))) is not None:
        return problem
    user = body.get("user")
    if body.get("type") in _ACTED_BY_A_PERSON:
        if not (isinstance(user, dict) and isinstance(user.get("id"), str)):
            return "`user` is not an object with an id"
    elif user is not None and not (
        isinstance(user, str) or (isinstance(user, dict) and isinstance(user.get("id"), str))
    ):
        return "`user` is neither an id nor an object with one"
    actions = body.get("actions")
    if actions is not None:
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            return "`actions` is not a list of objects"
        if any(_wrong(a, _ACTION_STRINGS, str) for a in actions):
            return "an action has a field of the wrong type"
        if body.get("type") == "block_actions" and not all(
            isinstance(a.get("action_id"), str) for a in actions
        ):
            return "an action has no `action_id`"
    if body.get("type") == "block_actions" and not actions:
        return "a `block_actions` payload without `actions`"
    view = body.get("view")
    if view is not None:
        if not isinstance(view, dict) or _wrong(view, _VIEW_STRINGS, str):
            return "`view` is not an object with string fields"
        if body.get("type") in ("view_submission", "view_closed") and not (
            isinstance(view.get("type"), str) and isinstance(view.get("callback_id"), str)
        ):
            return "`view` has no `type` or `callback_id`"
        if view.get("type") == "workflow_step":  # Bolt's legacy steps; this app has none
            return "this app has no workflow steps"
        state = view.get("state", {})
        values = state.get("values", {}) if isinstance(state, dict) else None
        if not isinstance(values, dict) or not all(
            isinstance(block, dict) and all(isinstance(field, dict) for field in block.values())
            for block in values.values()
        ):
            return "`view.state.values` is not an object of blocks of fields"
    event = body.get("event")
    if event is not None and (not isinstance(event, dict) or _wrong(event, _EVENT_STRINGS, str)):
        return "`event` is not an object with string fields"
    return None


def _actor(body: dict[str, Any]) -> str | None:
    """Who acts: a command's `user_id`, a click's `user.id`, a Home opener's `event.user`."""
    if body.get("type") == "event_callback":
        return (body.get("event") or {}).get("user")
    user = body.get("user")
    return body.get("user_id") or (user.get("id") if isinstance(user, dict) else user)


def parse_form(raw: str) -> dict[str, str]:
    """`dict(parse_qsl(raw, keep_blank_values=True))`, unquoting only what needs it.

    Most fields of a slash command (ids, the token) hold nothing to unquote, and
    this is the hottest parse of the app; tests/test_slack_intake.py holds it to
    the standard library's result.
    """
    fields: dict[str, str] = {}
    for pair in raw.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = _unquote_plus(name)
        if "%" in value or "+" in value:
            value = _unquote_plus(value)
        fields[name] = value
    return fields


def _unquote_plus(text: str) -> str:
    """`unquote_plus`; ASCII text (a response_url, a command's name) decoded in one step,
    where the standard library first splits it into ASCII and other runs."""
    if not text.isascii():
        return unquote_plus(text)
    text = text.replace("+", " ")
    return unquote_to_bytes(text).decode("utf-8", "replace") if "%" in text else text


def parse_slack_body(raw: str, content_type: str | None) -> tuple[Any, bool]:
    """The payload of a signed body, and whether it is plain form fields (all strings).

    JSON by Bolt's rule (a JSON content type, or a body opening with `{`);
    otherwise form fields, with interactivity's JSON in the `payload` field.
    Bolt's own parser looks for the word "payload" anywhere in the body, so a
    command whose text holds that word reached no listener.
    """
    if content_type == "application/json" or raw.startswith("{"):
        return load_json(raw), False
    fields = parse_form(raw)
    payload = fields.get("payload")
    if payload is not None:
        return load_json(payload), False
    return fields, True


class ParseSignedBody(Middleware):
    """Parses the body once the signature holds, then builds Bolt's context from it.

    A body that does not parse, or does not have the shape of a Slack payload,
    is answered here: a slash command with an ephemeral message (Slack shows the
    body of a 200 to the user), anything else with a 400 and JSON.
    """

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        raw = getattr(req, "raw_bytes", None)
        if isinstance(raw, bytes):
            try:
                req.raw_body = raw.decode("utf-8")
            except UnicodeDecodeError:  # nothing to read a command from: JSON, not ephemeral
                return _malformed({}, "the body is not UTF-8 text")
        try:
            body, form = parse_slack_body(req.raw_body, req.content_type)
        except Unreadable as exc:
            return _malformed({}, str(exc))
        except (ValueError, RecursionError):  # the JSON of a body or of its `payload=` field
            return _malformed({}, "the body is neither form fields nor JSON")
        if not isinstance(body, dict):
            return _malformed({}, f"the body is a JSON {type(body).__name__}, not an object")
        problem = form_problem(body) if form else payload_problem(body)
        if problem is None and form and ("%00" in req.raw_body or "\x00" in req.raw_body):
            problem = "it holds a NUL character"  # PostgreSQL refuses NUL in text
        if problem is None and (
            "command" in body
            or body.get("type") in _ACTED_BY_A_PERSON
            or (body.get("event") or {}).get("type") in _EVENTS_BY_A_PERSON
        ):
            actor = _actor(body)
            if not (isinstance(actor, str) and is_user_id(actor)):
                problem = "it does not name the Slack user who sent it"
        if problem is not None:
            return _malformed(body, problem)
        try:
            build_context(req.context, body)
        except (TypeError, AttributeError, KeyError, IndexError):  # fields checked above aside
            return _malformed(body, "Bolt cannot read who and where it comes from")
        req.body = body
        if not req.context.get("response_url") and is_user_id(req.context.get("user_id") or ""):
            # A click in the App Home or a modal: Slack gives no response_url.
            req.context["respond"] = answer_by_dm(req.context["client"], req.context["user_id"])
        return next()


# Interactions a listener answers on behalf of the person who clicked or submitted.
_ACTED_BY_A_PERSON = frozenset({"block_actions", "view_submission", "view_closed"})
_EVENTS_BY_A_PERSON = frozenset({"app_home_opened"})


def _malformed(body: dict[str, Any], problem: str) -> BoltResponse:
    log.warning("slack: a signed request this app cannot read: %s", problem)
    message = f"Slack sent a request I cannot read: {problem}. Nothing was done."
    if isinstance(body.get("command"), str):
        return ephemeral(message)
    return BoltResponse(status=400, body={"error": "malformed_payload", "message": message})


def ephemeral(text: str) -> BoltResponse:
    """A slash command's answer that only its sender sees (Slack shows a 200's body)."""
    return BoltResponse(status=200, body={"response_type": "ephemeral", "text": text})
