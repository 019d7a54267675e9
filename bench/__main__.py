"""`python -m bench`: every benchmark in one command, figures as plain text.

The header names the machine, because latency and throughput figures mean
little without it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy

from . import (
    access_review,
    audit_chain,
    decisions,
    engines,
    policy_reload,
    slack_instructions,
    slack_roundtrip,
    whatsapp_ingest,
    whatsapp_send,
)
from .report import say

DEFAULT_SEED = 20_241_124


def _cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(args: argparse.Namespace) -> None:
    say("wa-access benchmark")
    say("===================")
    say(f"date:     {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}")
    say(f"machine:  {platform.platform()} ({platform.machine()})")
    say(f"cpu:      {_cpu_model()}, {os.cpu_count()} logical CPUs")
    say(
        f"python:   {platform.python_implementation()} {platform.python_version()}; "
        f"SQLAlchemy {sqlalchemy.__version__}; SQLite {sqlite3.sqlite_version}"
    )
    mode = "quick (smoke run, smaller sizes)" if args.quick else "full"
    say(f"run:      {mode}; only={args.only or 'all'}; seed={args.seed}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes for a smoke run (20,000 audit entries, 1 s load windows)",
    )
    parser.add_argument(
        "--only",
        choices=(
            "decisions",
            "engines",
            "audit",
            "slack",
            "slack-instructions",
            "review",
            "reload",
            "whatsapp-ingest",
            "whatsapp-send",
        ),
        help="run one benchmark instead of all",
    )
    parser.add_argument(
        "--pg",
        metavar="URL",
        help="also run the gate path, access review and WhatsApp benchmarks on this PostgreSQL "
        "database (in a schema of its own, dropped afterwards)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="random seed of the decision workload"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    header(args)
    if args.only in (None, "decisions"):
        decisions.run(quick=args.quick, seed=args.seed)
    if args.only in (None, "engines"):
        engines.run(quick=args.quick, seed=args.seed, pg_url=args.pg)
    if args.only in (None, "audit"):
        audit_chain.run(quick=args.quick)
    if args.only in (None, "slack"):
        slack_roundtrip.run(quick=args.quick)
    if args.only in (None, "slack-instructions"):
        slack_instructions.run(quick=args.quick)
    if args.only in (None, "review"):
        access_review.run(quick=args.quick, pg_url=args.pg)
    if args.only in (None, "reload"):
        policy_reload.run(quick=args.quick)
    if args.only in (None, "whatsapp-ingest"):
        whatsapp_ingest.run(quick=args.quick, pg_url=args.pg)
    if args.only in (None, "whatsapp-send"):
        whatsapp_send.run(quick=args.quick, pg_url=args.pg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
