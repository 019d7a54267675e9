"""`wa-access`: the operator's command line (SPEC §9).

Exit codes: 0 success, 1 the operation failed or was refused, 2 usage error.
Every refusal prints one clear line to stderr, never a stack trace.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from handlers.commands.review_runs import ReviewRun
from rbac_core import audit
from rbac_core.principals import OPERATOR, Surface
from rbac_core.review import building as access_review
from rbac_core.store import migrate
from rbac_core.values import parse_user_id

from ..config import ConfigError, Settings, load_settings
from ..runtime import Runtime, build_runtime


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


def _runtime(
    require: Sequence[str] = (), *, need_schema: bool = True, writes: bool = True
) -> Runtime:
    runtime = build_runtime(_settings(require))
    if need_schema and not migrate.is_up_to_date(runtime.db):
        raise CliError("the database is not migrated: run `wa-access migrate` first")
    if writes and need_schema and runtime.settings.secret_key is None:
        # Every gate call appends to the audit log: without the key that would fail.
        with runtime.db.transaction(write=False) as txn:
            if audit.is_keyed(txn):
                raise CliError(str(audit.ChainKeyMissing()), 2)
    return runtime


def cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    runtime = _runtime(need_schema=False)
    migrate.upgrade(runtime.db)
    print(f"database at revision {migrate.current_revision(runtime.db)}", file=out)
    return 0


def _run_action(action: str, params: dict[str, object], out: TextIO) -> int:
    runtime = _runtime()
    outcome = runtime.gate.submit(OPERATOR, Surface.CLI, action, params)
    if outcome.ok:
        print(outcome.message, file=out)
    else:
        print(outcome.message, file=sys.stderr)
    return outcome.exit_code


def cmd_bootstrap_admin(args: argparse.Namespace, out: TextIO) -> int:
    user = _user_arg(args.user)
    return _run_action("system.bootstrap_admin", {"user": user}, out)


def _user_arg(value: str) -> str:
    try:
        return parse_user_id(value)
    except Exception as exc:
        raise CliError(str(exc), 2) from None


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
    from handlers.commands.review_runs import ReviewRefused, export_csv, run_review
    from handlers.scheduled.jobs import slack_deactivated
    from handlers.slack.review import slack_poster

    from ..slack.app import slack_client

    runtime = _runtime(("SLACK_BOT_TOKEN", "WA_AUDIT_CHANNEL") if args.post else ())
    gate, settings = runtime.gate, runtime.settings
    days = args.days if args.days is not None else settings.audit_inactive_days
    deactivated = None
    if settings.slack_bot_token:
        client = slack_client(settings)
        deactivated = lambda: slack_deactivated(client, lambda: None)  # noqa: E731
    elif not args.post:
        print("(SLACK_BOT_TOKEN not set: people deactivated in Slack are not checked)", file=out)
    post = None
    if args.post:
        assert settings.audit_channel is not None  # required above
        post = slack_poster(slack_client(settings), settings.audit_channel, gate.clock)
    try:
        run = run_review(gate, OPERATOR, Surface.CLI, days=days, deactivated=deactivated, post=post)
    except ReviewRefused as refused:
        raise CliError(refused.outcome.message, refused.outcome.exit_code) from None
    if args.post:
        print(f"{run.summary}; posted to {run.posted_to}", file=out)
        return 0
    _print_review(run, days, out)
    exported = gate.submit(OPERATOR, Surface.CLI, "review.export", {"review": run.review_id})
    if exported.status != "done":
        raise CliError(exported.message, exported.exit_code)
    csv_text = export_csv(gate, exported)
    if args.csv:
        _write_atomically(Path(args.csv), csv_text)
        print(f"all findings written to {args.csv}", file=out)
        return 0
    for row in csv.DictReader(io.StringIO(csv_text)):
        print(
            f"  {row['position']:>5}. {row['finding']:<11} {row['user']:<12} "
            f"{row['role']} in {row['scope']} (grant #{row['grant_id']})",
            file=out,
        )
    return 0


def _print_review(run: ReviewRun, days: int, out: TextIO) -> None:
    totals = run.totals
    print(
        f"access review #{run.review_id}: {totals.findings} findings for {totals.users} people "
        f"({totals.grants_checked} live grants checked, inactive = {days} days)",
        file=out,
    )
    for kind in access_review.KINDS:
        if totals.by_kind[kind]:
            print(f"  {totals.by_kind[kind]:>7} {access_review.KIND_TITLES[kind]}", file=out)


def _write_atomically(target: Path, text: str) -> None:
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None


def _days(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) < 12) or not (
        1 <= int(value) <= access_review.MAX_DAYS
    ):
        raise argparse.ArgumentTypeError(
            f"expected a whole number of days from 1 to {access_review.MAX_DAYS}"
        )
    return int(value)


def _version() -> str:
    try:
        return metadata.version("wa-access")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wa-access",
        description="Access control for a WhatsApp Business workspace, run from Slack. "
        "Settings come from the environment or a .env file (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from . import processes as process_cli

    process_cli.add_commands(sub)

    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    boot = sub.add_parser("bootstrap-admin", help="make the first admin (only while none exists)")
    boot.add_argument("user", metavar="SLACK_USER_ID")
    boot.set_defaults(func=cmd_bootstrap_admin)

    from . import directory as directory_cli

    directory_cli.add_commands(sub)

    from . import console as console_cli

    console_cli.add_commands(sub)

    aud = sub.add_parser("audit", help="the audit log")
    aud_sub = aud.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    from . import audit_log as audit_cli

    audit_cli.add_commands(aud_sub)
    exp = aud_sub.add_parser("export", help="export the log")
    exp.add_argument("--format", choices=("csv", "jsonl"), required=True)
    exp.add_argument("--output", "-o", help="file to write (default: stdout)")
    exp.set_defaults(func=cmd_audit_export)
    run = aud_sub.add_parser("run", help="run the access review now")
    run.add_argument("--days", type=_days, help="inactive after this many days (default 30)")
    run.add_argument("--csv", metavar="FILE", help="write every finding to FILE as CSV")
    run.add_argument("--post", action="store_true", help="post it to WA_AUDIT_CHANNEL")
    run.set_defaults(func=cmd_audit_run)

    from ..demo import command as demo_cli

    demo_cli.add_commands(sub)

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
    except BrokenPipeError:
        # The reader went away (`wa-access … | head`): stop quietly, and point stdout
        # at /dev/null so the interpreter's last flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
