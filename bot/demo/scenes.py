"""The demo's first scenes: the workspace set up, roles given in Slack, a customer writing,
an agent replying.

Each scene acts as someone would (an operator at the command line, a person in
Slack, Meta), prints what went in and what came out, and checks what must have
happened. What is printed comes from the answers, the fakes' records and the
product's own records, never from what the scene expected.
"""

from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass

from handlers.slack.blocks import CONFIRM_ACTION as CONFIRM
from rbac_core.principals import OPERATOR, Surface

from . import records, signing
from .narration import Narrator
from .stage import Person, SlackAnswer, Stage, pretty

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
QUEUED = re.compile(r"Queued message (\d+) ")
"""How `/wa-send` says a message is queued, with its id."""


@dataclass
class Story:
    """What earlier scenes learned that later ones act on."""

    conversation: str | None = None
    reply: int | None = None
    """The id of Alice's reply to the customer."""
    callback: str | None = None
    """The `biz_opaque_callback_data` her reply went to Meta with."""


def as_slack_shows(stage: Stage, text: str) -> str:
    """Mentions as people see them in Slack (`@alice`), and Slack's escapes undone."""

    def name(match: re.Match[str]) -> str:
        user = stage.slack.users.get(match.group(1))
        return f"@{user['name']}" if user else match.group(0)

    return html.unescape(_MENTION.sub(name, text))


def show_reply(stage: Stage, say: Narrator, answer: SlackAnswer) -> None:
    """An ephemeral answer to a command, with its buttons, as its author sees it."""
    buttons = [
        f"[{element['text']['text']}]"
        for block in answer.body.get("blocks", [])
        for element in block.get("elements", [])
        if element.get("type") == "button"
    ]
    shown = as_slack_shows(stage, answer.text)
    say.says("wa-access", f"{shown}  {' '.join(buttons)}".rstrip() + f"   (HTTP {answer.status})")


def typed(stage: Stage, who: Person, command: str, text: str, say: Narrator) -> SlackAnswer:
    """`who` types a command; it is printed as they typed it and its answer as they see it."""
    say.says("Slack", f"@{who.name} types: {command} {as_slack_shows(stage, text)}")
    answer = stage.slash(who, command, text)
    show_reply(stage, say, answer)
    say.check(answer.status == 200, f"Slack got HTTP {answer.status} for {command}, not 200")
    return answer


def new_posts(stage: Stage, say: Narrator, since: int) -> list[str]:
    """Print the messages the app posted to Slack since `since` calls; their texts."""
    texts = []
    for call in stage.posts()[since:]:
        channel = str(call.body.get("channel", ""))
        where = {
            stage.cast.audit_channel: f"the audit channel {channel}",
            stage.cast.alert_channel: f"the alert channel {channel}",
        }.get(channel)
        if where is None:
            user = stage.slack.users.get(channel)
            where = f"a DM to @{user['name']}" if user else channel
        text = str(call.body.get("text", ""))
        texts.append(text)
        say.says("Slack", f"received chat.postMessage to {where}:\n{as_slack_shows(stage, text)}")
    return texts


# -- the scenes ------------------------------------------------------------------------------


def setup(stage: Stage, say: Narrator, story: Story) -> None:
    say.heading("The operator makes the first admin and registers the business number")
    cast, gate = stage.cast, stage.runtime.gate
    steps = (
        (
            f"wa-access bootstrap-admin {cast.admin.id}",
            "system.bootstrap_admin",
            {"user": cast.admin.id},
        ),
        (
            f'wa-access number add {cast.business} --id {cast.phone_number_id} --label "Support"',
            "number.register",
            {"number": cast.business, "phone_number_id": cast.phone_number_id, "label": "Support"},
        ),
    )
    for line, action, params in steps:
        say.says("operator", line)
        outcome = gate.submit(OPERATOR, Surface.CLI, action, params)
        say.says("wa-access", outcome.message)
        say.check(outcome.status == "done", f"{action} ended {outcome.status}, not done")


def roles(stage: Stage, say: Narrator, story: Story) -> None:
    cast = stage.cast
    say.heading(f"The admin (@{cast.admin.name}) gives Alice and Bob their roles in Slack")
    posted = len(stage.posts())
    for person, role in ((cast.alice, "agent"), (cast.bob, "support")):
        text = f"assign <@{person.id}|{person.name}> {role} --number {cast.business}"
        answer = typed(stage, cast.admin, "/wa-role", text, say)
        if answer.button(CONFIRM) is not None:
            say.says("Slack", f"@{cast.admin.name} clicks Confirm (a signed block_actions payload)")
            status, said = stage.click(cast.admin, answer, CONFIRM)
            for reply in said:
                say.says("wa-access", f"{as_slack_shows(stage, reply)}   (via the response_url)")
            say.check(status == 200, f"the click got HTTP {status}, not 200")
            answer_text = " ".join(said)
        else:
            answer_text = answer.text
        say.check(
            answer_text.startswith(f"Assigned {role} to <@{person.id}>"),
            f"@{person.name} was not given {role}: {answer_text!r}",
        )
    delivered = stage.notices.run_until_idle()
    say.says("wa-access", f"the outbox worker delivered {delivered} notice(s) to Slack")
    texts = new_posts(stage, say, posted)
    for person, role in ((cast.alice, "agent"), (cast.bob, "support")):
        say.check(
            any(f"*{role}* to <@{person.id}>" in text for text in texts),
            f"the audit channel was not told that @{person.name} became {role}",
        )


def customer_writes(stage: Stage, say: Narrator, story: Story) -> None:
    cast = stage.cast
    say.heading("A customer writes to the business on WhatsApp")
    challenge = str(time.time_ns() % 10**10)
    say.says("Meta", f"GET /whatsapp/webhook?hub.mode=subscribe&hub.challenge={challenge}&…")
    status, echoed = stage.subscribe(challenge)
    say.says("wa-access", f"{status} {echoed}   (the verify token matched: Meta subscribes)")
    say.check((status, echoed) == (200, challenge), "the subscription check was not answered")
    written = int(time.time()) - 90
    wa_id = cast.customer.lstrip("+")
    payload = signing.notification(
        cast.waba_id,
        (cast.business, cast.phone_number_id),
        contacts=[signing.contact(wa_id, "Kerry Fisher")],
        messages=[signing.customer_text(wa_id, "wamid.DEMO1", "Hi! Where is my order?", written)],
    )
    say.says(
        "Meta",
        f"POST /whatsapp/webhook, signed X-Hub-Signature-256: Kerry Fisher ({cast.customer}) "
        'wrote "Hi! Where is my order?"',
    )
    for expected, why in (("received", "stored before answering"), ("already received", "")):
        if not why:
            say.says("Meta", "POST /whatsapp/webhook: the same body again (Meta retries)")
        status, body = stage.webhook(payload)
        say.says("wa-access", f"{status} {json.dumps(body)}" + (f"   ({why})" if why else ""))
        say.check((status, body.get("status")) == (200, expected), f"webhook: {status} {body}")
    intake = stage.process_webhooks()
    say.says("wa-access", str(intake))
    say.check(
        intake.bodies == 1 and intake.results == {"done"}, f"the body was not processed: {intake}"
    )
    seen = records.conversation_with(stage.runtime.db, cast.business, cast.customer)
    if seen is None:
        say.fail("no conversation was recorded for the customer")
        return
    closes = seen.window_closes
    window = f"until {closes:%Y-%m-%d %H:%M} UTC" if closes else "not open"
    say.says(
        "wa-access",
        f"conversation {seen.name} ({seen.state}) of {seen.number} with {seen.customer_name}: "
        f"{seen.messages_in} message in; its 24-hour window runs {window}",
    )
    say.check(seen.messages_in == 1, f"{seen.messages_in} inbound messages recorded, not 1")
    say.check(
        closes is not None and closes.timestamp() == written + 24 * 3600,
        "the window does not run 24 hours from the customer's own timestamp",
    )
    story.conversation = seen.name


def agent_replies(stage: Stage, say: Narrator, story: Story) -> None:
    cast = stage.cast
    say.heading("Alice (agent) replies from Slack, and the sender delivers it to Meta")
    sent_before = len(stage.graph_received())
    answer = typed(stage, cast.alice, "/wa-send", f"{cast.customer} Your order ships today", say)
    queued = QUEUED.match(answer.text)
    if queued is None:
        say.fail("the reply does not say the message was queued")
        return
    story.reply = int(queued.group(1))
    say.check(
        f"conversation {story.conversation})" in answer.text,
        f"the reply does not name the conversation {story.conversation}",
    )
    delivered = stage.sender.run_until_idle()
    say.says("wa-access", f"the WhatsApp sender took {delivered} queued message(s) to Meta")
    bodies = stage.graph_received()[sent_before:]
    for body in bodies:
        say.says("Meta", f"received POST /{cast.phone_number_id}/messages:\n{pretty(body)}")
    if not say.check(len(bodies) == 1, f"Meta received {len(bodies)} messages, not 1"):
        return
    body = bodies[0]
    say.check(body.get("text", {}).get("body") == "Your order ships today", "wrong text sent")
    story.callback = body.get("biz_opaque_callback_data")
    say.check(bool(story.callback), "no biz_opaque_callback_data sent")
    seen = records.message(stage.runtime.db, story.reply)
    if seen is None:
        say.fail(f"message {story.reply} is not recorded")
        return
    say.says("wa-access", f"message {seen.id} is marked {seen.status}; Meta's id: {seen.wamid}")
    say.check(seen.status == "sent" and seen.wamid is not None, "the message is not marked sent")


SCENES = (setup, roles, customer_writes, agent_replies)
