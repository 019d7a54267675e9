"""Meta's webhooks over real HTTP: signed bodies of 1, 10 and 100 events against gunicorn,
next to a bare Flask 200, on SQLite and (with --pg) PostgreSQL.

The bars (issue 14): with one event per POST, `wa-access serve` keeps at least
0.5x the requests/s of a Flask endpoint that only answers 200, under the same
gunicorn settings, with p99 under 50 ms; with batched POSTs, at least 1,000
events/s are stored *and processed*. Both servers go through `bot.server.serve`
(bench/bare_app.py), get the same signed bodies from the same client
(bench/http_load.py), in rounds that alternate which goes first.

Every body is new (fresh wamids from several customers, in Meta's exact shape),
so each request stores a row, and serve's own intake workers process them
while the load runs, as they would in production. After each window the run
waits until every stored body is processed: "processed events/s" is the
window's events over the time from its start until the last was done.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from bot.demo.fake_slack import FakeSlack
from rbac_core import Database
from rbac_core.directory import register_number
from rbac_core.store import migrate
from rbac_core.store.models import ConversationMessage, InboundWebhook
from tests.helpers import throwaway_schema

from .http_load import WORKERS, Make, Server, Window, gunicorn, load, window_line
from .report import fmt_count, fmt_ns, say, section, verdict

PATH = "/whatsapp/webhook"
APP_SECRET = "bench-meta-app-secret-0123456789"
VERIFY_TOKEN = "bench-verify-token"
PHONE_NUMBER_ID = "106540352242922"
BUSINESS = "+15550001111"
RATIO_BAR = 0.5
P99_BAR_MS = 50.0
EVENTS_BAR = 1000.0
PROCESS_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Sizes:
    rounds: int
    seconds: float
    max_requests: int
    warmup_seconds: float


FULL = Sizes(rounds=5, seconds=4.0, max_requests=60_000, warmup_seconds=2.0)
QUICK = Sizes(rounds=2, seconds=1.0, max_requests=10_000, warmup_seconds=0.5)


def body(tag: str, i: int, events: int) -> bytes:
    """Request `i` of a window: `events` inbound texts from 50 customers, Meta's shape and
    serialisation, every wamid new."""
    now = int(time.time())
    messages, contacts = [], []
    for k in range(events):
        customer = f"1650555{(i * events + k) % 50:04d}"
        contacts.append({"profile": {"name": f"Customer {customer[-4:]}"}, "wa_id": customer})
        messages.append(
            {
                "from": customer,
                "id": f"wamid.{tag}.{i}.{k}",
                "timestamp": str(now),
                "type": "text",
                "text": {"body": f"Where is my order {i}-{k}? \u00e9"},
            }
        )
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS[1:], "phone_number_id": PHONE_NUMBER_ID},
        "contacts": contacts[:1] if events == 1 else contacts,
        "messages": messages,
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


def requests_of(tag: str, events: int) -> Make:
    def make(i: int) -> tuple[dict[str, str], bytes]:
        raw = body(tag, i, events)
        digest = hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}
        return headers, raw

    return make


def received(status: int, answer: bytes) -> bool:
    return status == 200 and b"received" in answer


def bare_answered(status: int, answer: bytes) -> bool:
    return status == 200


def prepare(url: str) -> None:
    db = Database(url)
    try:
        migrate.upgrade(db)
        with db.write() as session:
            register_number(session, BUSINESS, PHONE_NUMBER_ID)
    finally:
        db.dispose()


def backlog(db: Database) -> tuple[int, int]:
    """(bodies not yet processed, inbound messages stored)."""
    with db.read() as session:
        waiting = session.scalar(
            select(func.count()).select_from(InboundWebhook).where(InboundWebhook.status != "done")
        )
        messages = session.scalar(select(func.count()).select_from(ConversationMessage))
    return int(waiting or 0), int(messages or 0)


def drained(db: Database) -> float:
    """Wait until every stored body is processed; when that happened (perf_counter)."""
    deadline = time.perf_counter() + PROCESS_TIMEOUT_S
    while backlog(db)[0]:
        if time.perf_counter() > deadline:
            raise RuntimeError("stored webhook bodies were not processed in time")
        time.sleep(0.02)
    return time.perf_counter()


@dataclass(frozen=True)
class Batched:
    events: int
    window: Window
    processed_per_s: float


def measure_batched(app: Server, db: Database, events: int, sizes: Sizes, tag: str) -> Batched:
    make = requests_of(f"{tag}b{events}", events)
    start = time.perf_counter()
    window = load(app, make, received, sizes.seconds, sizes.max_requests // events, PATH)
    done = drained(db)
    processed = window.requests * events / (done - start)
    say(
        window_line(f"  {events:>3} events/POST", window)
        + f"; stored {fmt_count(window.rps * events)} events/s, stored and processed "
        f"{fmt_count(processed)} events/s"
    )
    return Batched(events, window, processed)


def measure_single(
    bare: Server, app: Server, db: Database, sizes: Sizes, tag: str
) -> tuple[list[Window], list[Window]]:
    windows: dict[str, list[Window]] = {"bare": [], "app": []}
    for r in range(sizes.rounds):
        for name in ("bare", "app") if r % 2 == 0 else ("app", "bare"):
            server, check = (bare, bare_answered) if name == "bare" else (app, received)
            make = requests_of(f"{tag}s{r}{name}", 1)
            window = load(server, make, check, sizes.seconds, sizes.max_requests, PATH)
            windows[name].append(window)
            label = "bare Flask 200  " if name == "bare" else "webhook, 1 event"
            say(window_line(f"  round {r + 1} {label}", window))
        drained(db)  # the next round starts with the backlog processed
    return windows["bare"], windows["app"]


def run_on(label: str, url: str, sizes: Sizes, tmp: Path) -> tuple[bool, bool]:
    """Both measurements on one database; (single-event bar held, batched bar held)."""
    prepare(url)
    with ExitStack() as stack:
        slack = FakeSlack().start()
        stack.callback(slack.stop)
        env = {
            "DATABASE_URL": url,
            "SLACK_SIGNING_SECRET": "bench-slack-signing-secret",
            "SLACK_BOT_TOKEN": "xoxb-0000-bench",
            "SLACK_API_URL": slack.url,
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        }
        bare_argv = [sys.executable, "-m", "bench.bare_app"]
        bare = stack.enter_context(gunicorn("bare", bare_argv, {}, tmp, ("POST", PATH)))
        serve_argv = [sys.executable, "-m", "bot.cli", "serve"]
        app = stack.enter_context(gunicorn("wa-access", serve_argv, env, tmp, ("GET", "/healthz")))
        db = Database(url)
        stack.callback(db.dispose)
        say(
            f"{label}: both servers through bot.server.serve, {WORKERS} workers each, each "
            f"kept to a CPU of its own (--pin-workers); warm-up {sizes.warmup_seconds:.1f} s "
            "per server"
        )
        tag = f"w{int(time.time())}"
        load(bare, requests_of(tag + "wb", 1), bare_answered, sizes.warmup_seconds, 10**6, PATH)
        load(app, requests_of(tag + "wa", 1), received, sizes.warmup_seconds, 10**6, PATH)
        drained(db)
        bares, apps = measure_single(bare, app, db, sizes, tag)
        ratios = [a.rps / b.rps for b, a in zip(bares, apps, strict=True)]
        ratio = statistics.median(ratios)
        p99_ms = statistics.median(w.p(99) for w in apps) / 1e6
        say(
            f"  1 event/POST: webhook / bare = {ratio:.2f}x (rounds "
            f"{', '.join(f'{r:.2f}' for r in ratios)}); p50 "
            f"{fmt_ns(statistics.median(w.p(50) for w in apps))}, p99 {p99_ms:.1f} ms"
        )
        batched = [measure_batched(app, db, n, sizes, tag) for n in (10, 100)]
        stored = backlog(db)[1]
        problems = bare.problems() + app.problems()
    say(f"  {stored:,} inbound messages stored and processed; {len(problems)} error log lines")
    for line in problems[:5]:
        say(f"    log: {line}")
    best = max(b.processed_per_s for b in batched)
    say(
        f"  {label}: 1 event/POST >= {RATIO_BAR}x bare and p99 < {P99_BAR_MS:.0f} ms: "
        f"{verdict(ratio >= RATIO_BAR and p99_ms < P99_BAR_MS)}; batched >= "
        f"{EVENTS_BAR:,.0f} events/s stored and processed: {verdict(best >= EVENTS_BAR)} "
        f"({fmt_count(best)} events/s)"
    )
    return ratio >= RATIO_BAR and p99_ms < P99_BAR_MS, best >= EVENTS_BAR


def run(*, quick: bool, pg_url: str | None = None) -> None:
    sizes = QUICK if quick else FULL
    section("7. WhatsApp webhook ingest over HTTP (gunicorn, signed bodies)")
    with tempfile.TemporaryDirectory(prefix="wa-access-bench-") as tmp_name:
        tmp = Path(tmp_name)
        run_on("SQLite", f"sqlite:///{tmp / 'wa_access.db'}", sizes, tmp)
        if pg_url:
            with throwaway_schema(pg_url, "wa_bench") as url:
                run_on("PostgreSQL", url, sizes, tmp)
        else:
            say("PostgreSQL: not measured (pass --pg URL)")
