"""`/wa-2fa`: enrol, verify a code, see your status, reset someone's (admins)."""

from __future__ import annotations

from rbac_core import Gate

from .grammar import Subcommand, UsageError, parse
from .role_command import Reply, allowed_somewhere, reply_for

COMMAND = "/wa-2fa"

SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("enroll", "2fa.enroll", "/wa-2fa enroll", "turn on two-factor authentication"),
    Subcommand(
        "verify",
        "2fa.verify",
        "/wa-2fa verify CODE",
        "confirm enrolment, or unlock sensitive actions for 10 minutes",
        positionals=(("code", "word", True),),
    ),
    Subcommand("status", "2fa.status", "/wa-2fa status", "your 2FA state"),
    Subcommand(
        "reset",
        "2fa.reset",
        "/wa-2fa reset @user",
        "clear someone's 2FA (lost phone)",
        positionals=(("user", "user", True),),
        permission="security:reset_2fa",
    ),
)


class TwoFactorCommand:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def handle(self, actor: str, surface: str, text: str) -> Reply:
        try:
            parsed = parse(COMMAND, text, SUBCOMMANDS)
        except UsageError as exc:
            return Reply("usage", exc.render())
        if parsed is None:
            return Reply("text", self.help(actor))
        outcome = self.gate.submit(actor, surface, parsed.subcommand.action, parsed.params)
        return reply_for(outcome, parsed.subcommand.usage)

    def help(self, actor: str) -> str:
        policy = self.gate.policy()
        lines = ["*/wa-2fa* — two-factor authentication with an authenticator app"]
        for sub in SUBCOMMANDS:
            if sub.permission is None or allowed_somewhere(policy, actor, sub.permission):
                lines.append(f"• `{sub.usage}` — {sub.summary}")
        return "\n".join(lines)
