"""The demo's later scenes: Meta's statuses, refusals, a failed send explained, the audit
chain verified. Printed and checked as in scenes.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from .fake_graph import FakeGraph
from .narration import Narrator
from .records import message
from .scenes import QUEUED, Story, as_slack_shows, new_posts, typed
from .signing import message_status, notification
from .stage import Stage, pretty

STATUS_ORDER = ("read", "sent", "delivered")
"""How the demo's Meta delivers them: out of order, as Meta may (PROTOCOLS)."""
STATUS_DELAY = {"sent": 0, "delivered": 2, "read": 9}
"""Seconds apart that they happened at the customer's end, whatever order they arrive in."""
UNDELIVERABLE = 131026


def statuses(stage: Stage, say: Narrator, story: Story) -> None:
    cast = stage.cast
    say.heading("Meta reports the reply's statuses, out of order")
    seen = message(stage.runtime.db, story.reply) if story.reply else None
    callback = story.callback
    if seen is None or seen.wamid is None or callback is None:
        say.fail("there is no reply Meta accepted to report on")
        return
    at = int(datetime.now(UTC).timestamp()) - max(STATUS_DELAY.values()) - 1
    for state in STATUS_ORDER:
        happened = at + STATUS_DELAY[state]
        status = message_status(seen.wamid, state, cast.customer.lstrip("+"), callback, happened)
        payload = notification(
            cast.waba_id, (cast.business, cast.phone_number_id), statuses=[status]
        )
        code, body = stage.webhook(payload)
        say.says(
            "Meta",
            f"POST /whatsapp/webhook: {state} at {datetime.fromtimestamp(happened, UTC):%H:%M:%S} "
            f"(callback data {callback!r})",
        )
        say.says("wa-access", f"{code} {json.dumps(body)}")
        say.check(code == 200, f"the {state} status got HTTP {code}")
    intake = stage.process_webhooks()
    say.says("wa-access", str(intake))
    say.check(
        intake.bodies == 3 and intake.results == {"done"},
        f"the bodies were not processed: {intake}",
    )
    after = message(stage.runtime.db, seen.id)
    final = after.status if after else None
    recorded = ", ".join(after.statuses) if after else ""
    say.says(
        "wa-access",
        f"message {seen.id} is now {final} (statuses recorded, as they happened: {recorded})",
    )
    say.check(final == "read", f"the message ended {final}, not read")
    say.check(after is not None and len(after.statuses) == 3, "not every status was recorded")


def refusals(stage: Stage, say: Narrator, story: Story) -> None:
    cast = stage.cast
    say.heading("What the gate refuses, and what it allows instead")
    bob = typed(stage, cast.bob, "/wa-send", f"{cast.customer} I can fix that for you", say)
    say.check("messages:send_text" in bob.text, "Bob's free text was not refused for send_text")
    cold = typed(stage, cast.alice, "/wa-send", f"{cast.stranger} Hello, we have news", say)
    say.check("within 24 hours" in cold.text, "free text to a stranger was not refused (window)")
    before = len(stage.graph_received())
    line = f"{cast.stranger} --template order_update --param A-1042"
    template = typed(stage, cast.alice, "/wa-send", line, say)
    say.check(QUEUED.match(template.text) is not None, "the template was not queued")
    delivered = stage.sender.run_until_idle()
    say.says("wa-access", f"the WhatsApp sender took {delivered} queued message(s) to Meta")
    bodies = stage.graph_received()[before:]
    for body in bodies:
        say.says("Meta", f"received POST /{cast.phone_number_id}/messages:\n{pretty(body)}")
    say.check(
        [b.get("template", {}).get("name") for b in bodies] == ["order_update"],
        "Meta did not receive the template",
    )


def failed_send(stage: Stage, say: Narrator, story: Story) -> None:
    cast = stage.cast
    say.heading("A send Meta refuses, explained to the person who sent it")
    refusal = FakeGraph.error(UNDELIVERABLE, "Message Undeliverable")
    stage.graph.script(cast.phone_number_id, refusal)
    say.note(f"(the fake Meta is told to refuse the next send with error {UNDELIVERABLE})")
    calls_before, posts_before = len(stage.graph.calls), len(stage.posts())
    line = f"{cast.unreachable} --template order_update --param A-1043"
    answer = typed(stage, cast.alice, "/wa-send", line, say)
    queued = QUEUED.match(answer.text)
    if queued is None:
        say.fail("the template was not queued")
        return
    stage.sender.run_until_idle()
    for call in stage.graph.calls[calls_before:]:
        said = json.dumps(refusal.body) if call.status == refusal.status else ""
        say.says("Meta", f"answered POST /{call.phone_number_id}/messages: {call.status} {said}")
    seen = message(stage.runtime.db, int(queued.group(1)))
    if seen is None:
        say.fail(f"message {queued.group(1)} is not recorded")
        return
    say.says(
        "wa-access", f"message {seen.id} is marked {seen.status} (Meta's error {seen.error_code})"
    )
    say.check(
        (seen.status, seen.error_code) == ("failed", UNDELIVERABLE),
        "the message was not marked failed with Meta's code",
    )
    delivered = stage.notices.run_until_idle()
    say.says("wa-access", f"the outbox worker delivered {delivered} notice(s) to Slack")
    texts = new_posts(stage, say, posts_before)
    dms = [
        call for call in stage.posts()[posts_before:] if call.body.get("channel") == cast.alice.id
    ]
    say.check(len(dms) == 1, f"Alice got {len(dms)} DMs about the failure, not 1")
    say.check(any(str(UNDELIVERABLE) in t for t in texts), "the DM does not give Meta's code")


def audit(stage: Stage, say: Narrator, story: Story) -> None:
    cast = stage.cast
    say.heading("The admin checks the audit log from Slack")
    verify = typed(stage, cast.admin, "/wa-audit", "verify", say)
    said = stage.later(verify)
    for text in said:
        say.says("wa-access", f"{text}   (via the response_url)")
    say.check(any("intact" in t for t in said), f"the audit chain is not intact: {said}")
    log = typed(stage, cast.admin, "/wa-audit", "log --action whatsapp.send", say)
    for text in stage.later(log):
        say.says("wa-access", as_slack_shows(stage, text))
    exported = typed(stage, cast.admin, "/wa-audit", "export", say)
    for text in stage.later(exported):
        say.says("wa-access", f"{text}   (via the response_url)")
    files = stage.uploads()
    if len(files) != 1:
        say.fail(f"{len(files)} files reached Slack, not 1")
        return
    csv_text = files[0].decode("utf-8")
    entries = len(list(csv.DictReader(io.StringIO(csv_text))))
    leaked = [n for n in cast.customers if n.lstrip("+") in csv_text]
    say.says(
        "Slack",
        f"received the CSV by DM: {entries} entries, "
        f"{len(leaked)} of the {len(cast.customers)} customers' numbers in it",
    )
    say.check(entries > 0 and not leaked, "customers' numbers are in the audit log")


SCENES = (statuses, refusals, failed_send, audit)
