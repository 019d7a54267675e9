"""What one `/wa-role show`, `/wa-send` and stored webhook cost, in CPU instructions,
next to a bare Flask 200.

The throughput benchmark (bench.slack_roundtrip) measures the issue's bar, but on
a small shared machine its windows move by 5 to 10% from one minute to the next,
more than most changes to the code are worth. Instructions counted by valgrind's
callgrind do not move: the same code, inputs and environment give the same count
to within a fraction of a percent, whatever else the machine is doing. So this
is the figure to compare before and after a change to the hot path; the
round trip remains the figure that says whether the bar holds.

Each kind runs in a fresh process under callgrind (see bench.instructions_probe),
in process (no gunicorn, no sockets), and counts only user-space instructions:
the kernel's work for sockets and SQLite's file I/O, and the cache misses that
make a big code path slower under load than its count says, are not in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bot.demo.fake_slack import FakeSlack
from rbac_core import Database
from rbac_core.directory import register_number
from tests.slack_requests import SIGNING_SECRET

from .report import say, section
from .slack_roundtrip import prepare_database
from .whatsapp_ingest import APP_SECRET, BUSINESS, PHONE_NUMBER_ID, VERIFY_TOKEN

KINDS = (
    ("bare", "bare Flask 200 at /slack/events"),
    ("bolt", "Bolt, one listener that acknowledges a fixed text"),
    ("show", "full /wa-role show (signature, gate, database read, audit append)"),
    ("send", "full /wa-send --template (signature, gate, conversation, outbox, audit)"),
    ("bare-ingest", "bare Flask 200 at /whatsapp/webhook, Meta's bodies"),
    ("ingest", "one WhatsApp notification stored (signature, envelope, durable insert)"),
)
TIMEOUT_S = 900


def callgrind_total(path: Path) -> int:
    """The `totals:` line of a callgrind output file."""
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def count(kind: str, requests: int, env: dict[str, str], tmp: Path, response_url: str) -> int:
    """Instructions counted around `requests` WSGI calls of `kind` in a fresh process."""
    out = tmp / f"callgrind.{kind}.{requests}"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.instructions_probe",
        kind,
        str(requests),
        "--response-url",
        response_url,
    ]
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        argv,
        cwd=tmp,
        env={**os.environ, **env, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} probe failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return callgrind_total(out)


def run(*, quick: bool) -> None:
    section("4. Request cost in instructions (callgrind, in process, SQLite)")
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        say(f"skipped: {', '.join(missing)} not found (Debian package valgrind)")
        return
    requests = 60 if quick else 300
    with tempfile.TemporaryDirectory(prefix="wa-access-instr-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'wa_access.db'}"
        prepare_database(url, 0)
        db = Database(url)
        with db.write() as session:
            register_number(session, BUSINESS, PHONE_NUMBER_ID)
        db.dispose()
        slack = FakeSlack().start()
        stack.callback(slack.stop)
        env = {
            "DATABASE_URL": url,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_BOT_TOKEN": "xoxb-0000-bench",
            "SLACK_API_URL": slack.url,
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        }
        say(
            f"{requests} signed requests per kind, each kind in a fresh process, "
            "counted after 200 warm-up requests (less the cost of switching counting on and "
            "off, measured by a run of none)"
        )
        url = slack.response_url("bench")
        switching = count("bare", 0, env, tmp, url)  # counted in every run: taken off below
        counts = {}
        for kind, label in KINDS:
            counts[kind] = (count(kind, requests, env, tmp, url) - switching) / requests
            say(f"  {label}: {counts[kind] / 1000:,.0f}k instructions per request")
    bare, bolt, show = counts["bare"], counts["bolt"], counts["show"]
    say(
        f"show costs {show / bare:.2f}x the instructions of the bare 200 "
        f"(bare / show {bare / show:.2f}x); of show's extra {(show - bare) / 1000:,.0f}k, "
        f"Bolt takes {(bolt - bare) / 1000:,.0f}k and our listener, gate and database "
        f"{(show - bolt) / 1000:,.0f}k"
    )
    send, ingest, bare_ingest = counts["send"], counts["ingest"], counts["bare-ingest"]
    say(
        f"/wa-send costs {send / bare:.2f}x the bare 200 (bare / send {bare / send:.2f}x); "
        f"a stored notification {ingest / bare_ingest:.2f}x the bare 200 at its path "
        f"(bare / ingest {bare_ingest / ingest:.2f}x)"
    )
