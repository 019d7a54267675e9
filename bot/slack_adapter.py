"""The one Flask route that hands Slack's requests to Bolt, kept thin.

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
* the answer is built as one werkzeug `Response` from Bolt's status, body and
  headers, without Flask's `make_response` guessing what the body is.

Bolt still verifies the signature and timestamp before anything is parsed
(its RequestVerification middleware runs first), so nothing here trusts the
request.
"""

from __future__ import annotations

from flask import Request, Response
from slack_bolt import App, BoltRequest, BoltResponse

# The headers Bolt and our listeners read, as WSGI environ keys.
_HEADERS = (
    ("content-type", "CONTENT_TYPE"),
    ("x-slack-signature", "HTTP_X_SLACK_SIGNATURE"),
    ("x-slack-request-timestamp", "HTTP_X_SLACK_REQUEST_TIMESTAMP"),
    ("x-slack-retry-num", "HTTP_X_SLACK_RETRY_NUM"),
    ("x-slack-retry-reason", "HTTP_X_SLACK_RETRY_REASON"),
)


def to_bolt_request(request: Request) -> BoltRequest:
    environ = request.environ
    headers: dict[str, str | list[str]] = {
        name: [environ[key]] for name, key in _HEADERS if key in environ
    }
    query = request.query_string
    return BoltRequest(
        body=request.get_data(as_text=True),
        query=query.decode("utf-8", "replace") if query else None,
        headers=headers,
    )


def to_response(answer: BoltResponse) -> Response:
    headers = [(name, value) for name, values in answer.headers.items() for value in values]
    return Response(answer.body, status=answer.status, headers=headers)


class SlackEndpoint:
    """POST /slack/events: every command, interaction and event, through one Bolt app."""

    def __init__(self, app: App) -> None:
        self.app = app

    def handle(self, request: Request) -> Response:
        return to_response(self.app.dispatch(to_bolt_request(request)))
