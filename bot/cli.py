"""`wa-access`: the operator's command line (SPEC §9).

Exit codes: 0 success, 1 the operation failed or was refused, 2 usage error.
Every refusal prints one clear line to stderr, never a stack trace.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TextIO

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from handlers.role_command import Reply
from rbac_core import access_review, audit, migrate
from rbac_core.clock import utcnow
from rbac_core.values import parse_user_id

from .config import SERVE_REQUIRES, ConfigError, Settings, load_settings
from .runtime import Runtime, build_runtime

OPERATOR = "operator"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _settings(require: Sequence[str] = ()) -> Settings:
    try:
        return load_settings(require=require)
    except ConfigError as exc:
        raise CliError("\n".join(exc.problems), 2) from None


def _runtime(require: Sequence[str] = (), *, need_schema: bool = True) -> Runtime:
    runtime = build_runtime(_settings(require))
    if need_schema and not migrate.is_up_to_date(runtime.db):
        raise CliError("the database is not migrated: run `wa-access migrate` first")
    return runtime


def cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    runtime = _runtime(need_schema=False)
    migrate.upgrade(runtime.db)
    print(f"database at revision {migrate.current_revision(runtime.db)}", file=out)
    return 0


def _run_action(action: str, params: dict[str, object], out: TextIO) -> int:
    runtime = _runtime()
    outcome = runtime.gate.submit(OPERATOR, "cli", action, params)
    if outcome.ok:
        print(outcome.message, file=out)
    else:
        print(outcome.message, file=sys.stderr)
    return outcome.exit_code


def cmd_bootstrap_admin(args: argparse.Namespace, out: TextIO) -> int:
    user = _user_arg(args.user)
    return _run_action("system.bootstrap_admin", {"user": user}, out)


def cmd_user_add(args: argparse.Namespace, out: TextIO) -> int:
    user = _user_arg(args.user)
    return _run_action("user.register", {"user": user, "name": args.name}, out)


def cmd_number_add(args: argparse.Namespace, out: TextIO) -> int:
    params = {"number": args.number, "phone_number_id": args.id, "label": args.label}
    return _run_action("number.register", params, out)


def _user_arg(value: str) -> str:
    try:
        return parse_user_id(value)
    except Exception as exc:
        raise CliError(str(exc), 2) from None


def cmd_console(args: argparse.Namespace, out: TextIO, stdin: IO[str] | None = None) -> int:
    actor = _user_arg(args.as_user)
    runtime = _runtime()
    source = stdin or sys.stdin
    if isinstance(source, io.TextIOWrapper):
        source.reconfigure(errors="replace")  # a stray byte must not end the session
    interactive = source.isatty()
    worst = 0
    pending: str | None = None

    def show(reply: Reply) -> None:
        nonlocal pending, worst
        text = reply.text
        if reply.kind == "confirm":
            pending = reply.pending_id
            text += "\nType confirm or cancel."
        print(text, file=out)
        worst = max(worst, reply.exit_code)

    while True:
        if interactive:
            print("wa-access> ", end="", file=out, flush=True)
        line = source.readline()
        if not line:
            break
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word = line.lower()
        if word in ("confirm", "cancel"):
            if pending is None:
                show(Reply("usage", "There is nothing waiting for confirmation."))
                continue
            gate = runtime.gate
            outcome = (gate.confirm if word == "confirm" else gate.cancel)(pending, actor, "cli")
            pending = None
            text = outcome.message
            show(
                Reply("text" if outcome.ok else "error", text, outcome=outcome)
                if word == "confirm"
                else Reply("text", text)
            )
            continue
        command, _, rest = line.partition(" ")
        if command == "/wa-role":
            pending = None
            show(runtime.roles.handle(actor, "cli", rest))
        elif command == "/wa-2fa":
            pending = None
            reply = runtime.twofa.handle(actor, "cli", rest)
            show(reply)
            if "uri" in reply.data:  # the operator's own terminal: the one place to show it
                print(f"otpauth URI (shown once): {reply.data['uri']}", file=out)
        elif command == "/wa-audit":
            pending = None
            reply = runtime.audit.handle(actor, "cli", rest)
            show(reply)
            _show_audit_extras(reply, out)
        else:
            known = "/wa-role, /wa-2fa and /wa-audit"
            show(Reply("usage", f"unknown command '{command}': the console knows {known}"))
    return worst


def _show_audit_extras(reply: Reply, out: TextIO) -> None:
    """What Slack shows as blocks or a file, the console prints or points to."""
    shown = reply.data.get("page")
    if isinstance(shown, access_review.Page):
        for f in shown.findings:
            print(f"  {f.position:>4}. {f.kind:<11} {f.user} {f.role} in {f.scope}", file=out)
        if shown.pages > 1:
            more = f"page 1 of {shown.pages}: `wa-access audit run --csv FILE` lists all"
            print(f"  ({more})", file=out)
    if reply.outcome is not None and reply.outcome.action == "audit.export" and reply.outcome.ok:
        print("Use `wa-access audit export --format csv -o FILE` to write it here.", file=out)


def cmd_audit_verify(args: argparse.Namespace, out: TextIO) -> int:
    runtime = _runtime()
    with runtime.db.snapshot() as conn:
        result = audit.verify(conn)
    if result.ok:
        print(f"audit log intact: {result.entries} entries, head {result.head_hash}", file=out)
        return 0
    print(
        f"audit log TAMPERED: first bad entry {result.first_bad_seq}: {result.problem}",
        file=sys.stderr,
    )
    return 1


def cmd_audit_export(args: argparse.Namespace, out: TextIO) -> int:
    runtime = _runtime()
    if not args.output or args.output == "-":
        with runtime.db.snapshot() as conn:
            audit.export(conn, out, args.format)
        return 0
    target = Path(args.output)
    # Written beside the target and renamed at the end: a failed export never
    # leaves a file that looks complete.
    partial = target.with_name(f".{target.name}.partial")
    try:
        with runtime.db.snapshot() as conn, partial.open("w", encoding="utf-8", newline="") as fh:
            count = audit.export(conn, fh, args.format)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"exported {count} entries to {target}", file=sys.stderr)
    return 0


def cmd_audit_run(args: argparse.Namespace, out: TextIO) -> int:
    """The access review now: printed here, or with --post sent to the audit channel."""
    from handlers.scheduled_jobs import ReviewRefused, run_review, slack_deactivated

    from .slack_app import slack_client

    runtime = _runtime(("SLACK_BOT_TOKEN", "WA_AUDIT_CHANNEL") if args.post else ())
    gate, settings = runtime.gate, runtime.settings
    days = args.days if args.days is not None else settings.audit_inactive_days
    if args.post:
        assert settings.audit_channel is not None  # required above
        try:
            summary = run_review(
                gate,
                slack_client(settings),
                settings.audit_channel,
                actor=OPERATOR,
                surface="cli",
                days=days,
            )
        except ReviewRefused as exc:
            raise CliError(str(exc)) from None
        print(f"{summary}; posted to {settings.audit_channel}", file=out)
        return 0
    opened = gate.submit(OPERATOR, "cli", "audit.review", {"days": days})
    if opened.status != "done":
        raise CliError(opened.message, opened.exit_code)
    review_id = int(opened.data["review_id"])
    deactivated: set[str] = set()
    if settings.slack_bot_token:
        deactivated = slack_deactivated(slack_client(settings), lambda: None)
    else:
        print("(SLACK_BOT_TOKEN not set: people deactivated in Slack are not checked)", file=out)
    totals = access_review.build(
        runtime.db,
        review_id,
        now=utcnow(gate.clock),
        deactivated_in_slack=deactivated,
    )
    print(
        f"access review #{review_id}: {totals.findings} findings for {totals.users} people "
        f"({totals.grants_checked} live grants checked, inactive = {days} days)",
        file=out,
    )
    for kind in access_review.KINDS:
        if totals.by_kind[kind]:
            print(f"  {totals.by_kind[kind]:>7} {access_review.KIND_TITLES[kind]}", file=out)
    if args.csv:
        target = Path(args.csv)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as fh:
                access_review.write_csv(runtime.db, review_id, fh)
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
        print(f"all findings written to {target}", file=out)
    else:
        for finding in access_review.iter_findings(runtime.db, review_id):
            print(
                f"  {finding.position:>5}. {finding.kind:<11} {finding.user:<12} "
                f"{finding.role} in {finding.scope} (grant #{finding.grant_id})",
                file=out,
            )
    return 0


def cmd_scheduler(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    from .scheduler import build_scheduler
    from .slack_app import slack_client

    runtime = _runtime(("SLACK_BOT_TOKEN", "WA_AUDIT_CHANNEL"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    build_scheduler(runtime, slack_client(runtime.settings)).serve()
    return 0


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from .server import serve

    runtime = _runtime(SERVE_REQUIRES)
    runtime.db.dispose()  # each gunicorn worker opens its own connections
    serve(runtime.settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def _days(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= access_review.MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of days from 1 to {access_review.MAX_DAYS}"
        )
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wa-access", description="Access control for a WhatsApp Business workspace."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the HTTP endpoints")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--workers", type=int, default=2)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    boot = sub.add_parser("bootstrap-admin", help="make the first admin (only while none exists)")
    boot.add_argument("user", metavar="SLACK_USER_ID")
    boot.set_defaults(func=cmd_bootstrap_admin)

    user = sub.add_parser("user", help="people known to wa-access")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="SUBCOMMAND")
    add = user_sub.add_parser("add", help="register a Slack user id (gives no access)")
    add.add_argument("user", metavar="SLACK_USER_ID")
    add.add_argument("--name")
    add.set_defaults(func=cmd_user_add)

    number = sub.add_parser("number", help="WhatsApp numbers of the workspace")
    number_sub = number.add_subparsers(dest="number_command", required=True, metavar="SUBCOMMAND")
    nadd = number_sub.add_parser("add", help="register a number and its Graph phone-number id")
    nadd.add_argument("number", metavar="E164")
    nadd.add_argument("--id", metavar="PHONE_NUMBER_ID")
    nadd.add_argument("--label")
    nadd.set_defaults(func=cmd_number_add)

    console = sub.add_parser("console", help="run /wa-role commands from stdin as a user")
    console.add_argument("--as", dest="as_user", required=True, metavar="SLACK_USER_ID")
    console.set_defaults(func=cmd_console)

    aud = sub.add_parser("audit", help="the audit log")
    aud_sub = aud.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    aud_sub.add_parser("verify", help="check the hash chain").set_defaults(func=cmd_audit_verify)
    exp = aud_sub.add_parser("export", help="export the log")
    exp.add_argument("--format", choices=("csv", "jsonl"), required=True)
    exp.add_argument("--output", "-o", help="file to write (default: stdout)")
    exp.set_defaults(func=cmd_audit_export)
    run = aud_sub.add_parser("run", help="run the access review now")
    run.add_argument("--days", type=_days, help="inactive after this many days (default 30)")
    run.add_argument("--csv", metavar="FILE", help="write every finding to FILE as CSV")
    run.add_argument("--post", action="store_true", help="post it to WA_AUDIT_CHANNEL")
    run.set_defaults(func=cmd_audit_run)

    sched = sub.add_parser("scheduler", help="run the weekly access review and expiry sweeps")
    sched.set_defaults(func=cmd_scheduler)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, TextIO], int] = args.func
    try:
        return func(args, out or sys.stdout)
    except CliError as exc:
        print(exc.message, file=sys.stderr)
        return exc.code
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else exc.__class__.__name__
        print(f"database unavailable: {reason}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"database error: {exc.__class__.__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
