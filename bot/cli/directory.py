"""`wa-access user add|list|remove` and `wa-access number add|list|remove`.

The operator's hands on the directory: people wa-access knows and the
workspace's WhatsApp numbers. Every subcommand is a gate action run as the
`operator` on the `cli` surface, so each one is authorised and audited.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from rbac_core.principals import OPERATOR, Surface

from . import _run_action, _runtime, _user_arg


def cmd_user_add(args: argparse.Namespace, out: TextIO) -> int:
    return _run_action("user.register", {"user": _user_arg(args.user), "name": args.name}, out)


def cmd_user_remove(args: argparse.Namespace, out: TextIO) -> int:
    return _run_action("user.remove", {"user": _user_arg(args.user)}, out)


def cmd_number_add(args: argparse.Namespace, out: TextIO) -> int:
    params = {
        "number": args.number,
        "phone_number_id": args.id,
        "label": args.label,
        "channel": args.channel,
        "rate": args.rate,
    }
    return _run_action("number.register", params, out)


def cmd_number_remove(args: argparse.Namespace, out: TextIO) -> int:
    return _run_action("number.remove", {"number": args.number}, out)


def cmd_number_resume(args: argparse.Namespace, out: TextIO) -> int:
    return _run_action("number.resume", {"number": args.number}, out)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )


def _listed(action: str) -> dict[str, Any] | int:
    """A listing action's data, or its exit code after saying why it was refused."""
    outcome = _runtime().gate.submit(OPERATOR, Surface.CLI, action, {})
    if not outcome.ok:
        print(outcome.message, file=sys.stderr)
        return outcome.exit_code
    return dict(outcome.data)


def cmd_user_list(args: argparse.Namespace, out: TextIO) -> int:
    data = _listed("user.list")
    if isinstance(data, int):
        return data
    rows = [["USER", "NAME", "STATE", "GRANTS"]]
    for person in data["users"]:
        state = "active" if person["active"] else f"removed {person['deactivated_at']}"
        rows.append([person["user"], person["name"] or "-", state, str(person["grants"])])
    _table(rows, out)
    return 0


def cmd_number_list(args: argparse.Namespace, out: TextIO) -> int:
    data = _listed("number.list")
    if isinstance(data, int):
        return data
    rows = [["NUMBER", "PHONE-NUMBER ID", "LABEL", "GRANTS", "INBOX", "RATE/S", "SENDING"]]
    for number in data["numbers"]:
        rows.append(
            [
                number["number"],
                number["phone_number_id"] or "-",
                number["label"] or "-",
                str(number["grants"]),
                number["channel"] or "default",
                str(number["rate"]) if number["rate"] else "default",
                "paused" if number["paused"] else "on",
            ]
        )
    _table(rows, out)
    return 0


def add_commands(sub: Any) -> None:
    """`user` and `number`, added to the top-level subparsers."""
    user = sub.add_parser("user", help="people known to wa-access")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="SUBCOMMAND")
    add = user_sub.add_parser("add", help="register a Slack user id (gives no access by itself)")
    add.add_argument("user", metavar="SLACK_USER_ID", help="e.g. U0456DEF")
    add.add_argument("--name", help="a name to type in the console, e.g. alice (default: none)")
    add.set_defaults(func=cmd_user_add)
    listing = user_sub.add_parser("list", help="everyone wa-access knows, with live grants")
    listing.set_defaults(func=cmd_user_list)
    remove = user_sub.add_parser(
        "remove", help="deactivate someone: none of their grants count any more"
    )
    remove.add_argument("user", metavar="SLACK_USER_ID", help="e.g. U0456DEF")
    remove.set_defaults(func=cmd_user_remove)

    number = sub.add_parser("number", help="WhatsApp numbers of the workspace")
    number_sub = number.add_subparsers(dest="number_command", required=True, metavar="SUBCOMMAND")
    nadd = number_sub.add_parser("add", help="register a number and its Graph phone-number id")
    nadd.add_argument("number", metavar="E164", help="e.g. +15550001111")
    nadd.add_argument(
        "--id", metavar="PHONE_NUMBER_ID", help="Meta's phone-number id, digits (default: none)"
    )
    nadd.add_argument("--label", help="a name for people to recognise it (default: none)")
    nadd.add_argument(
        "--channel",
        metavar="CHANNEL_ID",
        help="the Slack channel its conversations go to (default: WA_INBOX_CHANNEL)",
    )
    nadd.add_argument(
        "--rate",
        metavar="PER_SECOND",
        help="messages a second it may send (default: WA_SEND_RATE, 80)",
    )
    nadd.set_defaults(func=cmd_number_add)
    nlist = number_sub.add_parser("list", help="registered numbers, with live grants on each")
    nlist.set_defaults(func=cmd_number_list)
    nremove = number_sub.add_parser(
        "remove", help="unregister a number (refused while grants on it count)"
    )
    nremove.add_argument("number", metavar="E164|PHONE_NUMBER_ID", help="e.g. +15550001111")
    nremove.set_defaults(func=cmd_number_remove)
    nresume = number_sub.add_parser(
        "resume", help="let a number Meta had restricted send again (after Meta allows it)"
    )
    nresume.add_argument("number", metavar="E164|PHONE_NUMBER_ID", help="e.g. +15550001111")
    nresume.set_defaults(func=cmd_number_resume)
