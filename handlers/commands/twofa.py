"""`/wa-2fa`: enrol, verify a code, see your status, reset someone's (admins)."""

from __future__ import annotations

from rbac_core import Gate

from .grammar import Subcommand
from .roles import SlashCommand

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


class TwoFactorCommand(SlashCommand):
    def __init__(self, gate: Gate) -> None:
        super().__init__(
            gate, COMMAND, SUBCOMMANDS, "two-factor authentication with an authenticator app"
        )
