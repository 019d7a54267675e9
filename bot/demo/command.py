"""`wa-access demo`, for the CLI's parser.

Kept apart from the demo itself: building the parser must stay cheap, and must
not import the app (and with it the metrics, which `serve` sets up first).
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

HELP = "see wa-access work end to end on this machine, with fake Slack and Meta: no account needed"


def add_commands(sub: Any) -> None:
    """`demo`, added to the top-level subparsers."""
    demo = sub.add_parser(
        "demo",
        help=HELP,
        description="Starts fake Slack and Graph API servers on 127.0.0.1 and the app on a "
        "scratch SQLite database, then drives the whole flow and narrates it. No setting "
        "is read: nothing from your environment or a .env file is used. Exits 0 when "
        "every check held, 1 otherwise.",
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from . import run_demo

    return run_demo(out)
