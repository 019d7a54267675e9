"""Sending WhatsApp messages: several sender processes, two numbers, one shared rate each.

The bars (issue 14): against a Graph API answering in 50 ms, two numbers at 80
messages/s each and 3 sender processes on PostgreSQL, 10,000 messages are sent
at each number's configured rate within ±5%, with no message sent twice. Sends
are queued through the gate (`whatsapp.send`, as `/wa-send` does) before the
senders start, so the senders, not the queueing, set the pace: the rate a
number achieves is the limiter's doing. Then, with the senders idle, a paced
trickle (10 a second) measures how long a message waits in the queue when
nothing is backed up. The senders are the production `WhatsAppSender`
(tests/whatsapp_sender.py runs one per process); Meta is
`bot.demo.fake_graph.FakeGraph` on 127.0.0.1.

The achieved rate of a number is measured over the steady middle of the run
(the first and last 5% of its sends left out: ramp-up and draining).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from bot.demo.fake_graph import FakeGraph
from rbac_core import Database, build_gate
from rbac_core.clock import utcnow
from rbac_core.directory import ensure_user, register_number
from rbac_core.store import migrate
from rbac_core.store.models import OutboxMessage
from tests.helpers import throwaway_schema

from .report import fmt_ns, percentile, say, section, verdict

NUMBERS = {"+15550001111": "106540352242922", "+15550002222": "106540352242933"}
RATE = 80.0
LATENCY_S = 0.05
SENDERS = 3
TOKEN = "bench-graph-token"
ADMIN = "U0BENCHADM"
RATE_TOLERANCE = 0.05
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    messages: int


FULL = Sizes(messages=10_000)
QUICK = Sizes(messages=1_000)


def prepare(url: str) -> None:
    db = Database(url)
    try:
        migrate.upgrade(db)
        with db.write() as session:
            ensure_user(session, ADMIN, utcnow())
            for e164, pid in NUMBERS.items():
                register_number(session, e164, pid)
    finally:
        db.dispose()
    gate = build_gate(Database(url))
    assert gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN}).ok
    gate.db.dispose()


def produce(url: str, messages: int, first: int = 0, per_second: float = 0.0) -> float:
    """Queue `messages` templates through the gate, each to a customer of its own, at
    `per_second` (0: as fast as the gate takes them); the seconds it took."""
    gate = build_gate(Database(url))
    numbers = list(NUMBERS)
    interval = 1.0 / per_second if per_second else 0.0
    begin = time.perf_counter()
    lock, counter = threading.Lock(), iter(range(first, first + messages))

    def producer() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            due = begin + (i - first) * interval
            time.sleep(max(0.0, due - time.perf_counter()))
            params = {"to": f"+1415{i:07d}", "from": numbers[i % 2], "template": "welcome"}
            outcome = gate.submit(ADMIN, "slack", "whatsapp.send", params)
            if outcome.status != "done":
                raise RuntimeError(f"queueing failed: {outcome.message}")

    threads = [threading.Thread(target=producer, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.db.dispose()
    return time.perf_counter() - begin


def senders(url: str, graph: FakeGraph, go_at: float) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.whatsapp_sender", "--db", url),
                *("--graph", graph.url, "--token", TOKEN, "--owner", f"bench-sender-{k}"),
                *("--rate", str(RATE), "--idle", "8", "--go-at", str(go_at)),
            ],
            cwd=_REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in range(SENDERS)
    ]


def achieved_rate(arrivals: list[float]) -> float:
    """Sends a second over the steady middle of the run."""
    ordered = sorted(arrivals)
    cut = len(ordered) // 20
    middle = ordered[cut : len(ordered) - cut]
    if len(middle) < 2:
        return 0.0
    return (len(middle) - 1) / (middle[-1] - middle[0])


def queue_times(url: str, graph: FakeGraph, offset: float, since: int) -> list[float]:
    """From queueing to arrival at Meta (nanoseconds), of the messages from number `since`
    on (the trickle)."""
    db = Database(url)
    with db.read() as session:
        created = {
            str(i): c.timestamp()
            for i, c in session.execute(
                select(OutboxMessage.id, OutboxMessage.created_at).where(
                    OutboxMessage.kind == "whatsapp.send"
                )
            )
        }
    db.dispose()
    waits = []
    for call in graph.sent():
        if _n(call) < since:
            continue
        key = str(call.body.get("biz_opaque_callback_data"))
        if key in created:
            waits.append((call.arrived + offset - created[key]) * 1e9)
    return waits


def run_on(label: str, url: str, sizes: Sizes) -> None:
    prepare(url)
    graph = FakeGraph(token=TOKEN).start()
    graph.latency = LATENCY_S
    offset = time.time() - time.monotonic()
    trickle = max(100, sizes.messages // 20)
    try:
        queued = produce(url, sizes.messages)
        go_at = time.time() + 3.0
        procs = senders(url, graph, go_at)
        deadline = go_at + sizes.messages / RATE + 120
        while len(graph.sent()) < sizes.messages and time.time() < deadline:
            time.sleep(0.1)  # the backlog drains first: the trickle then meets no queue
        produce(url, trickle, first=sizes.messages, per_second=10.0)
        for proc in procs:
            output, _ = proc.communicate(timeout=sizes.messages / RATE + 300)
            if proc.returncode:
                raise RuntimeError(f"a sender failed:\n{output.decode()[-2000:]}")
        sent = graph.sent()
        backlog = [c for c in sent if _n(c) < sizes.messages]
        callbacks = Counter(str(c.body.get("biz_opaque_callback_data")) for c in sent)
        duplicates = sum(n - 1 for n in callbacks.values())
        rates = {
            e164: achieved_rate([c.arrived for c in backlog if c.phone_number_id == pid])
            for e164, pid in NUMBERS.items()
        }
        waits = queue_times(url, graph, offset, since=sizes.messages)
    finally:
        graph.stop()
    say(
        f"{label}: {sizes.messages:,} messages queued through the gate in {queued:.1f} s "
        f"({sizes.messages / queued:,.0f}/s, 3 threads), then sent by {SENDERS} sender "
        f"processes to the fake Graph API ({LATENCY_S * 1000:.0f} ms a call); {trickle:,} more "
        f"queued at 10/s meanwhile; {len(callbacks):,} distinct messages reached Meta, "
        f"{duplicates} duplicates"
    )
    for e164, rate in rates.items():
        say(f"  {e164}: {rate:.1f} messages/s (configured {RATE:.0f}/s: {rate / RATE:.3f}x)")
    say(
        f"  time in the queue of the {len(waits):,} queued at 10/s: p50 "
        f"{fmt_ns(percentile(waits, 50))}, p99 {fmt_ns(percentile(waits, 99))}, max "
        f"{fmt_ns(max(waits))}"
    )
    within = all(abs(r / RATE - 1) <= RATE_TOLERANCE for r in rates.values())
    complete = len(callbacks) == sizes.messages + trickle
    say(
        f"  {label}: every number within ±{RATE_TOLERANCE:.0%} of its rate: {verdict(within)}; "
        f"0 duplicates and 0 lost: {verdict(duplicates == 0 and complete)}"
    )
    say(f"  (mean of the numbers: {statistics.mean(rates.values()):.1f}/s)")


def _n(call: object) -> int:
    """The index of the customer a call went to (the producer numbers them)."""
    to = str(getattr(call, "body", {}).get("to", ""))
    return int(to[5:]) if to.startswith("+1415") and to[5:].isdigit() else -1


def run(*, quick: bool, pg_url: str | None = None) -> None:
    sizes = QUICK if quick else FULL
    section("8. WhatsApp sending (3 sender processes, 2 numbers, fake Graph API)")
    if not pg_url:
        say("not measured: the bar is on PostgreSQL (pass --pg URL)")
        return
    with throwaway_schema(pg_url, "wa_bench") as url:
        run_on("PostgreSQL", url, sizes)
