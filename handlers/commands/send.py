"""`/wa-send`: a message to a customer, as free text or a template (SPEC §5).

    /wa-send NUMBER [--from N] --template NAME [--lang en_US] [--param V ...]
    /wa-send NUMBER [--from N] TEXT...

Options come before the text; the text is everything after them, exactly as
typed (quotes and all). Whether the person may send it, and whether the
customer's window is open, the gate decides (`whatsapp.send`); this only reads
the line and words the answer. Surface-neutral: Slack and the console both
call `SendCommand.handle`.
"""

from __future__ import annotations

import re

from rbac_core import Gate
from rbac_core.principals import Principal

from .grammar import MAX_TEXT, UsageError
from .roles import Reply, allowed_somewhere, reply_for

COMMAND = "/wa-send"
TEXT_USAGE = "/wa-send NUMBER [--from N] TEXT..."
TEMPLATE_USAGE = "/wa-send NUMBER [--from N] --template NAME [--lang en_US] [--param V ...]"
USAGE = f"{TEMPLATE_USAGE}\n       {TEXT_USAGE}"

_TOKEN = re.compile(r'"[^"]*"|\S+')
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"'})
OPTIONS = ("from", "template", "lang", "param")


class SendCommand:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def handle(
        self, actor: Principal, surface: str, text: str, default_from: str | None = None
    ) -> Reply:
        """Parse and send one line; `default_from` is the business number to use when the
        line names none (`WHATSAPP_PHONE_NUMBER_ID`), before the core's own default."""
        try:
            params = parse_send(text)
        except UsageError as exc:
            return Reply("usage", exc.render())
        if params is None:
            return Reply("text", self.help(actor))
        if "from" not in params and default_from:
            params["from"] = default_from
        outcome = self.gate.submit(actor, surface, "whatsapp.send", params)
        return reply_for(outcome, USAGE)

    def help(self, actor: Principal) -> str:
        policy = self.gate.policy()
        lines = [f"*{COMMAND}* — a WhatsApp message to a customer"]
        if allowed_somewhere(policy, actor.id, "messages:send_template"):
            lines.append(f"• `{TEMPLATE_USAGE}` — an approved template, any time")
        if allowed_somewhere(policy, actor.id, "messages:send_text"):
            lines.append(
                f"• `{TEXT_USAGE}` — free text, within 24 hours of the customer's last message"
            )
        if len(lines) == 1:
            lines.append("You may not send WhatsApp messages (ask an admin for a role).")
        lines.append(f"• `{COMMAND} help` — this list")
        return "\n".join(lines)


def parse_send(text: str) -> dict[str, object] | None:
    """The params of one `/wa-send` line; None for help. Raises UsageError."""
    if len(text) > MAX_TEXT + 200:
        raise UsageError(f"the command is too long ({len(text)} characters)", USAGE)
    typed = text.replace("\x00", "").strip()  # NUL: no database stores it
    line = typed.translate(_SMART_QUOTES)  # for reading options; the text stays as typed
    tokens = list(_TOKEN.finditer(line))
    if not tokens or tokens[0].group().lower() in ("help", "-h", "--help"):
        return None
    first = tokens[0].group()
    if first.startswith("--"):
        raise UsageError("say whom to send to first: their number, e.g. +16505551234", USAGE)
    params: dict[str, object] = {"to": first.strip('"')}
    values: list[str] = []
    i = 1
    while i < len(tokens) and tokens[i].group().startswith("--"):
        name = tokens[i].group()[2:].lower()
        if name not in OPTIONS:
            raise UsageError(f"unknown option --{name} for {COMMAND}", USAGE)
        if i + 1 >= len(tokens) or tokens[i + 1].group().startswith("--"):
            raise UsageError(f"--{name} needs a value", USAGE)
        value = tokens[i + 1].group().strip('"')
        if name == "param":
            values.append(value)
        elif name in params:
            raise UsageError(f"--{name} is given twice", USAGE)
        else:
            params[name] = value
        i += 2
    message = typed[tokens[i].start() :].strip() if i < len(tokens) else ""
    return _checked(params, values, message)


def _checked(params: dict[str, object], values: list[str], message: str) -> dict[str, object]:
    if "template" in params:
        if message:
            raise UsageError("a template takes its values with --param, not free text", USAGE)
        if values:
            params["params"] = values
        return params
    if "lang" in params or values:
        raise UsageError("--lang and --param go with --template", USAGE)
    if not message:
        raise UsageError("say what to send: free text, or --template NAME", USAGE)
    params["text"] = message
    return params
