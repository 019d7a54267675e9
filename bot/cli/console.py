"""`wa-access console`: the slash commands of Slack, typed as a person at a terminal.

The lines go through the same command handlers and gate as Slack's, acting for
the person named by `--as` (with that person's rights, never the operator's),
so whatever Slack would refuse is refused here too, and each action is audited.
What Slack shows as a button, a block or a file becomes a line of text, and a
risky command waits for a `confirm` or `cancel` line as it would for a click.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from typing import IO, Any, Literal, TextIO

from handlers.commands.grammar import UsageError
from handlers.commands.roles import Reply
from rbac_core.directory import users_named
from rbac_core.principals import Principal, Surface
from rbac_core.review.reading import Page

from ..runtime import Runtime
from . import _runtime, _user_arg

CONSOLE_REQUEST_NOTE = (
    "Approvers are told in WA_AUDIT_CHANNEL once a `wa-access serve` or `wa-access worker` "
    "delivers it; they also see the request in their App Home."
)
KNOWN_COMMANDS = "/wa-role, /wa-2fa, /wa-audit and /wa-send"


def cmd_console(args: argparse.Namespace, out: TextIO, stdin: IO[str] | None = None) -> int:
    # The actor first, before the database is opened: a malformed --as is a usage
    # error (exit 2) whatever state the database is in.
    actor = _user_arg(args.as_user)
    session = ConsoleSession(_runtime(), Principal.person(actor), out)
    source = stdin or sys.stdin
    if isinstance(source, io.TextIOWrapper):
        source.reconfigure(errors="replace")  # a stray byte must not end the session
    for line in _command_lines(source, out):
        session.handle(line)
    return session.finish()


def _command_lines(source: IO[str], out: TextIO) -> Iterator[str]:
    """The lines worth answering, prompting for each only when a person is typing.

    A prompt in piped input would end up in the output a script reads.
    """
    interactive = source.isatty()
    while True:
        if interactive:
            print("wa-access> ", end="", file=out, flush=True)
        line = source.readline()
        if not line:
            return
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


class ConsoleSession:
    """One run of the console: what waits for `confirm`, and the worst exit code so far.

    The exit code is the worst of the session so that a script piping many
    commands learns that one of them was refused, not only whether the last was.
    """

    def __init__(self, runtime: Runtime, actor: Principal, out: TextIO) -> None:
        self.runtime = runtime
        self.actor = actor
        self.out = out
        self.pending: str | None = None
        self.worst = 0

    def handle(self, line: str) -> None:
        word = line.lower()
        if word in ("confirm", "cancel"):
            self._answer_pending(word)
            return
        command, _, rest = line.partition(" ")
        self._run(command, rest)

    def finish(self) -> int:
        """The session's exit code; a command left waiting counts as not done."""
        if self.pending is not None:
            waiting = "Nothing was done: the last command was still waiting for confirm."
            print(waiting, file=self.out)
            self.worst = max(self.worst, 1)
        return self.worst

    def show(self, reply: Reply) -> None:
        text = reply.text
        if reply.kind == "confirm":
            self.pending = reply.pending_id
            text += "\nType confirm or cancel."
        outcome = reply.outcome
        if outcome is not None and outcome.action == "access.request" and outcome.ok:
            text += f"\n{CONSOLE_REQUEST_NOTE}"
        print(text, file=self.out)
        self.worst = max(self.worst, reply.exit_code)

    def names(self, name: str) -> str:
        """The one person registered as @name: Slack resolves mentions, a terminal cannot."""
        with self.runtime.gate.db.read() as session:
            found = users_named(session, name)
        if len(found) == 1:
            # Names come from `user add --name` and from Slack's handle at first contact:
            # say who was meant before anything is confirmed.
            print(f"(@{name} is {found[0]})", file=self.out)
            return found[0]
        if found:
            raise UsageError(f"{len(found)} people are registered as '{name}': use their id")
        raise UsageError(
            f"nobody is registered as '{name}': use their id (U…), or register them with "
            "`wa-access user add ID --name NAME`"
        )

    def _answer_pending(self, word: str) -> None:
        if self.pending is None:
            # After a refused command this is the refusal's consequence (exit 1);
            # with nothing refused before, a misplaced word (a usage error, exit 2).
            kind: Literal["error", "usage"] = "error" if self.worst else "usage"
            self.show(Reply(kind, "There is nothing waiting for confirmation."))
            return
        gate = self.runtime.gate
        answer = gate.confirm if word == "confirm" else gate.cancel
        outcome = answer(self.pending, self.actor, Surface.CLI)
        self.pending = None
        text = outcome.message
        self.show(
            Reply("text" if outcome.ok else "error", text, outcome=outcome)
            if word == "confirm"
            else Reply("text", text)
        )

    def _run(self, command: str, rest: str) -> None:
        # A new command replaces whatever waited for confirmation; an unknown one does not.
        runtime, actor = self.runtime, self.actor
        if command == "/wa-role":
            self.pending = None
            self.show(runtime.roles.handle(actor, Surface.CLI, rest, names=self.names))
        elif command == "/wa-2fa":
            self.pending = None
            reply = runtime.twofa.handle(actor, Surface.CLI, rest, names=self.names)
            self.show(reply)
            if "uri" in reply.data:  # the operator's own terminal: the one place to show it
                print(f"otpauth URI (shown once): {reply.data['uri']}", file=self.out)
        elif command == "/wa-send":
            self.pending = None
            default = runtime.settings.whatsapp_phone_number_id
            self.show(runtime.send.handle(actor, Surface.CLI, rest, default))
        elif command == "/wa-audit":
            self.pending = None
            reply = runtime.audit.handle(actor, Surface.CLI, rest, names=self.names)
            self.show(reply)
            _show_audit_extras(reply, self.out)
        else:
            unknown = f"unknown command '{command}': the console knows {KNOWN_COMMANDS}"
            self.show(Reply("usage", unknown))


def _show_audit_extras(reply: Reply, out: TextIO) -> None:
    """What Slack shows as blocks or a file, the console prints or points to."""
    shown = reply.data.get("page")
    if isinstance(shown, Page):
        for f in shown.findings:
            print(f"  {f.position:>4}. {f.kind:<11} {f.user} {f.role} in {f.scope}", file=out)
        if shown.pages > 1:
            more = f"page 1 of {shown.pages}: `wa-access audit run --csv FILE` lists all"
            print(f"  ({more})", file=out)
    if reply.outcome is not None and reply.outcome.action == "audit.export" and reply.outcome.ok:
        print("Use `wa-access audit export --format csv -o FILE` to write it here.", file=out)


def add_commands(sub: Any) -> None:
    """`console`, added to the top-level subparsers."""
    console = sub.add_parser(
        "console",
        help="run /wa-role, /wa-2fa, /wa-audit and /wa-send commands from stdin as a person",
        description="Reads one command per line: /wa-role, /wa-2fa, /wa-audit or /wa-send, "
        "as in Slack; "
        "`confirm` or `cancel` answer a risky command. People may be named as <@U…>, @U… "
        "or @name (a name given to `user add`). Exit codes: 0 success, 1 refused, failed "
        "or left unconfirmed, 2 usage error.",
    )
    console.add_argument(
        "--as", dest="as_user", required=True, metavar="SLACK_USER_ID", help="who is acting"
    )
    console.set_defaults(func=cmd_console)
