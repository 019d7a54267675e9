"""Slash commands over real HTTP: signed Slack requests against gunicorn, next to a bare
Flask 200.

The bar (issue 15) is relative: a full `/wa-role show` (signature check, gate,
database read, audit append) must keep at least 0.5x the throughput of a Flask
endpoint that only answers 200, under the same gunicorn settings, with a p99
under 20 ms at that load. `/wa-send` (a template to one of 50 customers: the
gate, the conversation, the message, the outbox row, the audit entry; the sends
stay queued, as no WHATSAPP_ACCESS_TOKEN is set) is measured the same way and
reported beside it, without a bar. A ratio is only meaningful if both sides are
measured alike, so:

* both servers go through `bot.server.serve` (the real app via `wa-access serve`,
  the baseline via `python -m bench.bare_app`), so worker class, workers and
  threads are the same by construction, and both keep each worker to a CPU of
  its own (`--pin-workers`, the setting for a host the server has to itself);
  show is then measured again with workers free to move, the default, and that
  ratio is printed beside the bar's;
* both get the same signed slash-command POST from the same client, in rounds
  that alternate which goes first, and the medians of the rounds are reported;
* the database is a migrated SQLite file in a temporary directory, and Slack's
  Web API is `bot.demo.fake_slack.FakeSlack` on 127.0.0.1 (auth.test, users.info and
  response_url posts), so nothing leaves the machine.

The client and the servers are bench/http_load.py's. Client CPU, server CPU per
request and the CPU taken by other processes are printed for every window, so a
reader can see how much of the machine each side used and whether the run was
disturbed.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from bot.demo.fake_slack import FakeSlack
from rbac_core import Database, build_gate
from rbac_core import audit as audit_log
from rbac_core.clock import utcnow
from rbac_core.directory import ensure_user, register_number
from rbac_core.store import migrate
from rbac_core.store.models import Grant
from tests.slack_requests import SIGNING_SECRET, block_action, signed_headers, slash_command

from .http_load import (
    CLIENTS,
    LOPSIDED,
    QUIET_BAR,
    REQUEST_TIMEOUT_S,
    WORKERS,
    Check,
    Connection,
    Make,
    Server,
    Window,
    gunicorn,
    load,
    machine_busy,
    window_line,
)
from .report import fmt_count, fmt_ns, percentile, say, section, verdict

BUSINESS, PHONE_NUMBER_ID = "+15550001111", "106540352242922"
RATIO_BAR = 0.5
P99_BAR_MS = 20.0
PATH = "/slack/events"

ADMIN = "U0BENCHADM"
TEAM = ("U0BENCHAL1", "U0BENCHBO2", "U0BENCHCA3")
# /wa-role show callers: the admin (one grant, every permission) and three
# people with zero or one grant, so replies and reads vary like a real team's.
SHOW_ACTORS = (ADMIN, *TEAM)


@dataclass(frozen=True)
class Sizes:
    """How much to measure: the full run, or a smaller smoke run with --quick."""

    rounds: int  # measured windows per server, alternating which goes first
    seconds: float  # length of one measured window
    max_requests: int  # cap per window, so a window also ends by count
    warmup_seconds: float
    pairs: int  # assign + confirm pairs per concurrency level
    warmup_pairs: int


# Five shorter rounds rather than three longer ones: on a shared machine a window
# now and then runs 20-30% slow (another tenant, a lopsided accept), and the
# median of five per-round ratios is moved by two such windows, not by one.
FULL = Sizes(
    rounds=5, seconds=4.0, max_requests=60_000, warmup_seconds=2.0, pairs=300, warmup_pairs=20
)
QUICK = Sizes(
    rounds=3, seconds=1.0, max_requests=10_000, warmup_seconds=0.5, pairs=40, warmup_pairs=5
)


def signed(body: str) -> tuple[dict[str, str], bytes]:
    """Headers Slack would send with `body`: fresh timestamp, v0 HMAC-SHA256 signature."""
    return signed_headers(body, secret=SIGNING_SECRET), body.encode()


# -- the workspace ---------------------------------------------------------------


def _fresh_user(i: int) -> str:
    return f"U0BNEW{i:05d}"


def prepare_database(url: str, fresh_users: int) -> None:
    """Migrate, bootstrap the admin, register the team (two with a grant) and fresh users.

    Everything goes through the gate as an operator and an admin would, so the
    policy, audit head and grants are exactly what production would hold.
    """
    db = Database(url)
    try:
        migrate.upgrade(db)
        gate = build_gate(db)
        outcome = gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN})
        if outcome.status != "done":
            raise RuntimeError(f"bootstrap failed: {outcome.message}")
        for user in TEAM:
            registered = gate.submit("operator", "cli", "user.register", {"user": user})
            if not registered.ok:
                raise RuntimeError(f"registering {user} failed: {registered.message}")
        for user, role in ((TEAM[0], "agent"), (TEAM[1], "analyst")):
            asked = gate.submit(ADMIN, "cli", "role.assign", {"user": user, "role": role})
            if asked.pending_id is None:
                raise RuntimeError(f"assign {role} to {user}: {asked.message}")
            done = gate.confirm(asked.pending_id, ADMIN, "cli")
            if done.status != "done":
                raise RuntimeError(f"assign {role} to {user}: {done.message}")
        with db.write() as session:
            register_number(session, BUSINESS, PHONE_NUMBER_ID)  # what /wa-send sends from
            now = utcnow()
            for i in range(fresh_users):
                ensure_user(session, _fresh_user(i), now)
    finally:
        db.dispose()  # the last connection checkpoints the WAL; servers open their own


def check_database(url: str) -> tuple[int, audit_log.VerifyResult]:
    """Live analyst grants and a full walk of the audit chain after the run."""
    db = Database(url)
    try:
        with db.read() as session:
            grants = session.scalar(
                select(func.count())
                .select_from(Grant)
                .where(Grant.role == "analyst", Grant.revoked_at.is_(None))
            )
        with db.snapshot() as conn:
            result = audit_log.verify(conn)
    finally:
        db.dispose()
    return int(grants or 0), result


# -- the two measurements ---------------------------------------------------------


def show_requests(response_url: str) -> Make:
    """Signed `/wa-role show` slash commands, cycling through the callers."""
    bodies = [slash_command(actor, "show", response_url) for actor in SHOW_ACTORS]

    def make(i: int) -> tuple[dict[str, str], bytes]:
        return signed(bodies[i % len(bodies)])

    return make


def show_answered(status: int, body: bytes) -> bool:
    return status == 200 and b"Grants of" in body


SEND_CUSTOMERS = 50


def send_requests(response_url: str) -> Make:
    """Signed `/wa-send` template sends from the agent to 50 customers in turn."""
    bodies = [
        slash_command(TEAM[0], f"+1650555{k:04d} --template welcome", response_url, "/wa-send")
        for k in range(SEND_CUSTOMERS)
    ]

    def make(i: int) -> tuple[dict[str, str], bytes]:
        return signed(bodies[i % len(bodies)])

    return make


def send_answered(status: int, body: bytes) -> bool:
    return status == 200 and b"Queued message" in body


def bare_answered(status: int, body: bytes) -> bool:
    return status == 200


# A window one worker served alone is measured again, up to this many times: with each
# worker kept to its own CPU such a window is capped at one CPU, and its ratio tells
# nothing about the code.
LOPSIDED_RETRIES = 3


def _lopsided(window: Window) -> bool:
    return max(window.worker_share, default=0.0) > LOPSIDED


@dataclass(frozen=True)
class Throughput:
    """The measured windows of both servers, round by round."""

    bare: list[Window]
    show: list[Window]

    @property
    def round_ratios(self) -> list[float]:
        return [s.rps / b.rps for b, s in zip(self.bare, self.show, strict=True)]

    @property
    def ratio(self) -> float:
        """The median of the per-round ratios.

        Each round measures both servers back to back, so a slow drift of the
        machine (another process starting, the CPU clocking down) lands on both
        halves of a ratio; a ratio of the medians would pair windows from
        different moments.
        """
        return statistics.median(self.round_ratios)

    @property
    def disturbed(self) -> int:
        """How many windows other processes took a noticeable share of the CPUs in."""
        return sum(w.others_busy > QUIET_BAR for w in (*self.bare, *self.show))

    @property
    def lopsided(self) -> int:
        """How many windows one worker served nearly alone in.

        gthread keeps a keep-alive connection on the worker that accepted it,
        and which worker wins each accept is up to the kernel: now and then all
        of the client's connections land on one worker, which then caps the
        window at one process's worth of CPU.
        """
        return sum(_lopsided(w) for w in (*self.bare, *self.show))

    @property
    def show_p99_ms(self) -> float:
        return statistics.median(w.p(99) for w in self.show) / 1e6


def measure(
    bare: Server, app: Server, make: Make, answered: Check, label: str, sizes: Sizes
) -> Throughput:
    """Warm both servers up, then alternate measured windows and summarise medians."""
    load(bare, make, bare_answered, sizes.warmup_seconds, sizes.max_requests, PATH)
    load(app, make, answered, sizes.warmup_seconds, sizes.max_requests, PATH)
    say(
        f"{label}: warm-up {sizes.warmup_seconds:.1f} s per server; then {sizes.rounds} rounds "
        f"of {sizes.seconds:.1f} s each (at most {sizes.max_requests:,} requests), "
        "alternating which server goes first"
    )
    windows: dict[str, list[Window]] = {"bare": [], "app": []}
    targets = {"bare": (bare, bare_answered), "app": (app, answered)}
    labels = {"bare": "bare Flask 200", "app": label}
    width = max(len(v) for v in labels.values())
    for r in range(sizes.rounds):
        order = ("bare", "app") if r % 2 == 0 else ("app", "bare")
        for name in order:
            server, check = targets[name]
            line = f"  round {r + 1} {labels[name]:<{width}}"
            for attempt in range(LOPSIDED_RETRIES + 1):
                window = load(server, make, check, sizes.seconds, sizes.max_requests, PATH)
                if not _lopsided(window) or attempt == LOPSIDED_RETRIES:
                    break
                say(window_line(f"{line} (one worker alone: measured again)", window))
            windows[name].append(window)
            say(window_line(line, window))
    result = Throughput(windows["bare"], windows["app"])
    for name in ("bare", "app"):
        ws = windows[name]
        say(
            f"median {labels[name]:<{width}}: {fmt_count(statistics.median(w.rps for w in ws))} "
            f"req/s, p50 {fmt_ns(statistics.median(w.p(50) for w in ws))}, "
            f"p99 {fmt_ns(statistics.median(w.p(99) for w in ws))} "
            f"(worst round p99 {fmt_ns(max(w.p(99) for w in ws))}); server CPU "
            f"{fmt_ns(statistics.median(w.server_cpu_s * 1e9 / max(1, w.requests) for w in ws))}"
            "/request"
        )
    per_round = ", ".join(f"{r:.2f}" for r in result.round_ratios)
    cpu_ratio = statistics.median(
        (b.server_cpu_s / max(1, b.requests)) / (s.server_cpu_s / max(1, s.requests))
        for b, s in zip(result.bare, result.show, strict=True)
    )
    say(
        f"{label} / bare throughput: {result.ratio:.2f}x (median of the rounds {per_round}); "
        f"server CPU per request bare / {label}: {cpu_ratio:.2f}x"
    )
    if result.disturbed:
        say(
            f"  note: other processes took over {QUIET_BAR * 100:.0f}% of the CPUs in "
            f"{result.disturbed} of {2 * sizes.rounds} windows: these figures are disturbed, "
            "rerun on a quiet machine"
        )
    if result.lopsided:
        say(
            f"  note: in {result.lopsided} of {2 * sizes.rounds} windows one worker served over "
            f"{LOPSIDED * 100:.0f}% of the requests (all keep-alive connections landed on it) "
            f"even after {LOPSIDED_RETRIES} more tries; the per-round median keeps such a "
            "window from deciding the ratio alone"
        )
    say()
    return result


@dataclass(frozen=True)
class Pairs:
    """Timings of assign + confirm round trips at one client concurrency."""

    clients: int
    seconds: float
    pair_ns: list[float]
    assign_ns: list[float]
    confirm_ns: list[float]


def assign_confirm(
    app: Server, users: Iterator[str], count: int, clients: int, response_url: str
) -> Pairs:
    """`count` assign + Confirm round trips by `clients` threads, each on one connection.

    Every pair names a user nobody has assigned yet, so no answer is a
    duplicate-grant refusal; the pending id comes from the Confirm button of
    the ephemeral reply, exactly as Slack would send it back.
    """
    lock = threading.Lock()
    todo = iter([next(users) for _ in range(count)])
    pair_ns: list[float] = []
    assign_ns: list[float] = []
    confirm_ns: list[float] = []
    failures: list[str] = []

    def client() -> None:
        conn = Connection(app.port)
        clock = time.perf_counter_ns
        try:
            while True:
                with lock:
                    user = next(todo, None)
                if user is None:
                    return
                headers, body = signed(
                    slash_command(ADMIN, f"assign <@{user}> analyst", response_url)
                )
                begin = clock()
                try:
                    status, answer = conn.post(PATH, headers, body)
                    asked = clock()
                    pending = _pending_id(status, answer)
                    if pending is None:
                        failures.append(f"assign {user}: HTTP {status} {answer[:300]!r}")
                        continue
                    click = block_action(ADMIN, "wa_confirm", pending, response_url)
                    headers, body = signed(click)
                    status, answer = conn.post(PATH, headers, body)
                    done = clock()
                except OSError as exc:
                    failures.append(f"{user}: {type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                if status != 200:
                    failures.append(f"confirm {user}: HTTP {status} {answer[:300]!r}")
                    continue
                with lock:
                    pair_ns.append(done - begin)
                    assign_ns.append(asked - begin)
                    confirm_ns.append(done - asked)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(count * 2 * REQUEST_TIMEOUT_S)
    seconds = time.perf_counter() - begin
    if failures or len(pair_ns) != count:
        raise RuntimeError(
            f"{count - len(pair_ns)} of {count} assign + confirm pairs failed; "
            f"first: {failures[:1]}"
        )
    return Pairs(clients, seconds, pair_ns, assign_ns, confirm_ns)


def _pending_id(status: int, answer: bytes) -> str | None:
    """The value of the Confirm button in an ephemeral confirmation, if that is what came back."""
    if status != 200:
        return None
    try:
        reply = json.loads(answer)
        actions = [b for b in reply["blocks"] if b["type"] == "actions"]
        return str(actions[0]["elements"][0]["value"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _pairs_line(p: Pairs) -> str:
    n = len(p.pair_ns)
    who = "1 client" if p.clients == 1 else f"{p.clients} clients"
    return (
        f"assign + confirm, {who}: {n:,} pairs in {p.seconds:.2f} s = "
        f"{n / p.seconds:,.1f} pairs/s; pair p50 {fmt_ns(percentile(p.pair_ns, 50))}, "
        f"p99 {fmt_ns(percentile(p.pair_ns, 99))} (assign p50 "
        f"{fmt_ns(percentile(p.assign_ns, 50))} p99 {fmt_ns(percentile(p.assign_ns, 99))}; "
        f"confirm p50 {fmt_ns(percentile(p.confirm_ns, 50))} "
        f"p99 {fmt_ns(percentile(p.confirm_ns, 99))})"
    )


# -- the section -------------------------------------------------------------------


def run(*, quick: bool) -> None:
    sizes = QUICK if quick else FULL
    section("3. Slack round trip over HTTP (gunicorn, signed requests, SQLite)")
    fresh = sizes.warmup_pairs + 2 * sizes.pairs
    quiet = machine_busy(1.0)
    warning = (
        "" if quiet < QUIET_BAR else " - OTHER PROCESSES ARE BUSY: expect noisy, lower figures"
    )
    say(f"machine before the run: {quiet * 100:.0f}% of all CPUs busy over 1 s{warning}")
    with tempfile.TemporaryDirectory(prefix="wa-access-bench-") as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'wa_access.db'}"
        prepare_database(url, fresh)
        with ExitStack() as stack:  # fake Slack and both servers, stopped even on errors
            slack = FakeSlack().start()
            stack.callback(slack.stop)
            response_url = slack.response_url("bench")
            env = {
                "DATABASE_URL": url,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_BOT_TOKEN": "xoxb-0000-bench",
                "SLACK_API_URL": slack.url,
                # No WHATSAPP_ACCESS_TOKEN: the sends stay queued, so /wa-send is measured
                # alone; sending them is `python -m bench --only whatsapp-send`'s.
                "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            }
            bare, app = _servers(stack, tmp, env, pinned=True)
            say(
                f"database: {url} (migrated; 1 admin, {len(TEAM)} people, {fresh:,} fresh "
                "users for assign; removed afterwards)"
            )
            say(
                f"servers:  bare Flask 200 (python -m bench.bare_app) and `wa-access serve`, "
                f"both through bot.server.serve: gunicorn {_worker_class(bare)}/"
                f"{_worker_class(app)}, {WORKERS} workers each, each worker kept to a CPU of "
                f"its own (--pin-workers); fake Slack Web API at {slack.url}"
            )
            say(
                f"client:   {CLIENTS} threads in this process, one keep-alive connection each, "
                "every request signed afresh (v0 HMAC-SHA256); the same signed "
                "`/wa-role show` POSTs go to both servers"
            )
            throughput = measure(
                bare, app, show_requests(response_url), show_answered, "/wa-role show", sizes
            )
            measure(bare, app, send_requests(response_url), send_answered, "/wa-send", sizes)
            say()
            users = (_fresh_user(i) for i in range(fresh))
            assign_confirm(app, users, sizes.warmup_pairs, 1, response_url)
            pairs = [assign_confirm(app, users, sizes.pairs, n, response_url) for n in (1, CLIENTS)]
            for p in pairs:
                say(_pairs_line(p))
            posted = [r for r in slack.responses() if "Assigned analyst to" in str(r.get("text"))]
            problems = bare.problems() + app.problems()
            bare.stop()
            app.stop()

            say()
            say("The same, with workers free to move between CPUs (serve's default):")
            free_bare, free_app = _servers(stack, tmp, env, pinned=False)
            unpinned = measure(
                free_bare,
                free_app,
                show_requests(response_url),
                show_answered,
                "/wa-role show",
                sizes,
            )
            problems += free_bare.problems() + free_app.problems()
        grants, chain = check_database(url)  # after the servers stopped

    assigned = sizes.warmup_pairs + 2 * sizes.pairs
    as_expected = grants == assigned + 1 and len(posted) == assigned and chain.ok and not problems
    say(
        f"checks: {grants:,} live analyst grants (expected {assigned + 1:,}), {len(posted):,} "
        f"'Assigned' updates posted to response_url (expected {assigned:,}); audit chain "
        f"{'intact' if chain.ok else 'BROKEN: ' + str(chain.problem)} ({chain.entries:,} entries); "
        f"{len(problems)} error lines in the server logs: "
        f"{'all as expected' if as_expected else 'NOT AS EXPECTED'}"
    )
    for line in problems[:10]:
        say(f"  log: {line}")
    say()
    say(
        f"/wa-role show >= {RATIO_BAR}x bare Flask throughput: "
        f"{verdict(throughput.ratio >= RATIO_BAR)} ({throughput.ratio:.2f}x)"
    )
    say(f"  (without --pin-workers: {unpinned.ratio:.2f}x, p99 {unpinned.show_p99_ms:.1f} ms)")
    say(
        f"/wa-role show p99 < {P99_BAR_MS:.0f} ms at that load: "
        f"{verdict(throughput.show_p99_ms < P99_BAR_MS)} ({throughput.show_p99_ms:.1f} ms, "
        "median of the rounds)"
    )


def _servers(
    stack: ExitStack, tmp: Path, env: dict[str, str], *, pinned: bool
) -> tuple[Server, Server]:
    """The bare 200 and `wa-access serve`, under the same gunicorn settings."""
    bare_argv = [sys.executable, "-m", "bench.bare_app"]
    serve_argv = [sys.executable, "-m", "bot.cli", "serve"]
    suffix = "" if pinned else "-unpinned"
    bare = stack.enter_context(
        gunicorn(f"bare{suffix}", bare_argv, {}, tmp, ("POST", PATH), pinned=pinned)
    )
    app = stack.enter_context(
        gunicorn(f"wa-access{suffix}", serve_argv, env, tmp, ("GET", "/healthz"), pinned=pinned)
    )
    return bare, app


def _worker_class(server: Server) -> str:
    """The worker class gunicorn says it uses, read from its log."""
    for line in server.log.read_text(errors="replace").splitlines():
        if "Using worker:" in line:
            return line.rsplit(":", 1)[1].strip()
    return "?"
