"""`/wa-role`: the grammar of SPEC §5 mapped onto the core's role actions.

Surface-neutral: Slack and the operator console both call `RoleCommand.handle`
and render the `Reply` their own way. Authorization is never decided here; the
gate decides, this module only words the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rbac_core import Gate, Outcome
from rbac_core.principals import Principal

from .grammar import NameLookup, Option, Subcommand, UsageError, parse

COMMAND = "/wa-role"

SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "show",
        "role.show",
        "/wa-role show [@user]",
        "grants and effective permissions",
        positionals=(("user", "user", False),),
    ),
    Subcommand(
        "list",
        "role.list",
        "/wa-role list",
        "roles with their permissions",
        permission="roles:view",
    ),
    Subcommand(
        "assign",
        "role.assign",
        "/wa-role assign @user ROLE [--number N] [--for 30d] [--reason TEXT]",
        "give someone a role, optionally for one number and for a time",
        positionals=(("user", "user", True), ("role", "word", True)),
        options=(Option("number"), Option("for"), Option("reason", "text")),
        permission="roles:assign",
    ),
    Subcommand(
        "revoke",
        "role.revoke",
        "/wa-role revoke @user ROLE [--number N] [--reason TEXT]",
        "take a role away",
        positionals=(("user", "user", True), ("role", "word", True)),
        options=(Option("number"), Option("reason", "text")),
        permission="roles:assign",
    ),
    Subcommand(
        "create",
        "role.create",
        "/wa-role create NAME [--from ROLE] [--perms p1,p2] [--inherits R1,R2] [--2fa] "
        "[--description TEXT]",
        "create a custom role",
        positionals=(("name", "word", True),),
        options=(
            Option("from"),
            Option("perms", "list"),
            Option("inherits", "list"),
            Option("2fa", "flag"),
            Option("description", "text"),
        ),
        permission="roles:manage",
    ),
    Subcommand(
        "edit",
        "role.edit",
        "/wa-role edit NAME [--add p1,p2] [--remove p3] [--inherits R] [--uninherit R] "
        "[--2fa on|off]",
        "change a custom role",
        positionals=(("name", "word", True),),
        options=(
            Option("add", "list"),
            Option("remove", "list"),
            Option("inherits", "list", "add_parents"),
            Option("uninherit", "list", "remove_parents"),
            Option("2fa", "toggle"),
        ),
        permission="roles:manage",
    ),
    Subcommand(
        "delete",
        "role.delete",
        "/wa-role delete NAME",
        "delete a custom role",
        positionals=(("name", "word", True),),
        permission="roles:manage",
    ),
    Subcommand(
        "request",
        "access.request",
        "/wa-role request ROLE [--number N] --for 4h --reason TEXT",
        "ask for a role for a while; approvers decide with buttons",
        positionals=(("role", "word", True),),
        options=(Option("number"), Option("for"), Option("reason", "text")),
        permission="roles:view",
    ),
    Subcommand(
        "why",
        "role.why",
        "/wa-role why @user PERMISSION [--number N] [--request ID]",
        "explain why someone may or may not do something (to an access request)",
        positionals=(("user", "user", True), ("permission", "word", True)),
        options=(Option("number"), Option("request")),
        permission="roles:view",
    ),
)


@dataclass(frozen=True)
class Reply:
    """What to tell the person, independent of how the surface shows it."""

    kind: Literal["text", "confirm", "error", "usage"]
    text: str
    pending_id: str | None = None
    outcome: Outcome | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.kind == "usage":
            return 2
        if self.outcome is not None:
            return self.outcome.exit_code
        return 1 if self.kind == "error" else 0


class SlashCommand:
    """One slash command: its grammar, its help, and the gate behind every subcommand."""

    def __init__(
        self, gate: Gate, command: str, subcommands: tuple[Subcommand, ...], title: str
    ) -> None:
        self.gate = gate
        self.command = command
        self.subcommands = subcommands
        self.title = title

    def handle(
        self,
        actor: Principal,
        surface: str,
        text: str,
        before_submit: Callable[[Mapping[str, object]], None] | None = None,
        names: NameLookup | None = None,
    ) -> Reply:
        """Parse and run one command line.

        `before_submit` lets a surface look up people the command names (Slack
        asks users.info) before the gate checks they exist; `names` lets it
        accept `@name` for a registered name (the console).
        """
        try:
            parsed = parse(self.command, text, self.subcommands, names)
        except UsageError as exc:
            return Reply("usage", exc.render())
        if parsed is None:
            return Reply("text", self.help(actor))
        if before_submit is not None:
            before_submit(parsed.params)
        outcome = self.gate.submit(actor, surface, parsed.subcommand.action, parsed.params)
        return reply_for(outcome, parsed.subcommand.usage)

    def help(self, actor: Principal) -> str:
        """Only what the caller may do (SPEC §5): a denied subcommand is not listed.

        A subcommand that takes `--number` is checked in that number, so it is
        listed when the caller holds its permission in any scope; any other is
        checked everywhere (`*`), so it is listed only when held there. This is
        the same check the gate makes, so help never offers what is refused.
        """
        policy = self.gate.policy()
        lines = [f"*{self.command}* — {self.title}"]
        for sub in self.subcommands:
            if may_use(policy, actor.id, sub):
                lines.append(f"• `{sub.usage}` — {sub.summary}")
        lines.append(f"• `{self.command} help` — this list")
        return "\n".join(lines)


class RoleCommand(SlashCommand):
    def __init__(self, gate: Gate) -> None:
        super().__init__(gate, COMMAND, SUBCOMMANDS, "who may do what in the WhatsApp workspace")


def may_use(policy: Any, actor: str, sub: Subcommand) -> bool:
    """Whether the gate would let `actor` use `sub` in at least one scope."""
    if sub.permission is None:
        return True
    if sub.per_number:
        return allowed_somewhere(policy, actor, sub.permission)
    return bool(policy.decide(actor, sub.permission, "*").allowed)


def allowed_somewhere(policy: Any, actor: str, permission: str) -> bool:
    """Whether `actor` holds `permission` in any scope: what help may show them."""
    return any(permission in perms for perms in policy.effective_permissions(actor).values())


def reply_for(outcome: Outcome, usage: str = "") -> Reply:
    if outcome.status == "needs_confirmation":
        return Reply(
            "confirm",
            outcome.message,
            pending_id=outcome.pending_id,
            outcome=outcome,
            data=outcome.data,
        )
    if outcome.status == "done":
        return Reply("text", outcome.message, outcome=outcome, data=outcome.data)
    text = outcome.message
    if outcome.status == "invalid" and usage:
        text = f"{text}\nUsage: {usage}"
    return Reply("error", text, outcome=outcome)
