"""/wa-role over real HTTP: signed Slack requests against gunicorn, next to a bare Flask 200.

The Slack issue's bar is relative: a full `/wa-role show` (signature check,
gate, database read, audit append) must keep at least 0.35x the throughput of a
Flask endpoint that only answers 200, under the same gunicorn settings, with a
p99 under 50 ms at that load. A ratio is only meaningful if both sides are
measured alike, so:

* both servers go through `bot.server.serve` (the real app via `wa-access serve`,
  the baseline via `python -m bench.bare_app`), so worker class, workers and
  threads are the same by construction;
* both get the same signed slash-command POST from the same client, in rounds
  that alternate which goes first, and the medians of the rounds are reported;
* the database is a migrated SQLite file in a temporary directory, and Slack's
  Web API is `tests.fake_slack.FakeSlack` on 127.0.0.1 (auth.test, users.info and
  response_url posts), so nothing leaves the machine.

The client is a few threads on keep-alive connections speaking just enough
HTTP/1.1 for gunicorn's answers: `http.client` costs about three times more CPU
per request, and on a small machine the client shares the cores with the
server, so its cost comes off the baseline more than off the slower app and
flatters the ratio. Client CPU, server CPU per request and the CPU taken by
other processes are printed for every window, so a reader can see how much of
the machine each side used and whether the run was disturbed.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from rbac_core import Database, build_gate
from rbac_core import audit as audit_log
from rbac_core.clock import utcnow
from rbac_core.directory import ensure_user
from rbac_core.store import migrate
from rbac_core.store.models import Grant
from tests.fake_slack import FakeSlack
from tests.slack_requests import SIGNING_SECRET, block_action, signed_headers, slash_command

from .report import fmt_count, fmt_ns, percentile, say, section, verdict

RATIO_BAR = 0.35
P99_BAR_MS = 50.0
CLIENTS = 8  # as many as the 2 workers x 4 threads can serve at once
WORKERS = 2
PATH = "/slack/events"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
QUIET_BAR = 0.10  # machine busier than this before the run: warn that figures are noisy
LOPSIDED = 0.90  # one worker's share of the workers' CPU above which a window is lopsided

ADMIN = "U0BENCHADM"
TEAM = ("U0BENCHAL1", "U0BENCHBO2", "U0BENCHCA3")
# /wa-role show callers: the admin (one grant, every permission) and three
# people with zero or one grant, so replies and reads vary like a real team's.
SHOW_ACTORS = (ADMIN, *TEAM)
_REPO_ROOT = Path(__file__).resolve().parent.parent


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


# -- a lean HTTP/1.1 client ---------------------------------------------------


class Connection:
    """One keep-alive connection to 127.0.0.1 that POSTs and reads a Content-Length answer.

    gunicorn always answers a Flask response with Content-Length, so that is all
    this understands; anything else raises rather than guessing.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=REQUEST_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"{head}\r\n".encode("latin-1")
            + body
        )
        return self._answer()

    def _recv(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65_536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _answer(self) -> tuple[int, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._recv()
        lines = self.buffer[:end].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise ConnectionError(f"unsupported transfer-encoding {value.strip()!r}")
        if length is None:
            raise ConnectionError("answer without Content-Length")
        start = end + 4
        while len(self.buffer) < start + length:
            self._recv()
        body = self.buffer[start : start + length]
        self.buffer = self.buffer[start + length :]
        if close:
            self.close()
        return status, body


def signed(body: str) -> tuple[dict[str, str], bytes]:
    """Headers Slack would send with `body`: fresh timestamp, v0 HMAC-SHA256 signature."""
    return signed_headers(body, secret=SIGNING_SECRET), body.encode()


# -- processes and CPU accounting ----------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of one process in seconds, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if int(raw.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return total - idle, total


def machine_busy(seconds: float) -> float:
    """Share of all CPUs busy over `seconds` while this benchmark does nothing.

    Other processes on the machine (a test run, a build) take CPU from both
    servers unevenly over time, so the figures are only worth comparing when
    this is near zero.
    """
    busy, total = _machine_ticks()
    time.sleep(seconds)
    busy_after, total_after = _machine_ticks()
    return (busy_after - busy) / max(1, total_after - total)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Server:
    """One gunicorn master started by this benchmark, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    workers: list[int] = field(default_factory=list)

    def cpu(self) -> dict[int, float]:
        """CPU seconds used so far by the master and each worker, by pid."""
        usage = {}
        for pid in (self.proc.pid, *self.workers):
            seconds = _proc_cpu(pid)
            if seconds is not None:
                usage[pid] = seconds
        return usage

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def problems(self) -> list[str]:
        """Log lines that mean something went wrong while serving."""
        words = ("Traceback", "ERROR", "CRITICAL", "WORKER TIMEOUT", "Exception")
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines() if any(w in line for w in words)]

    def stop(self) -> None:
        """TERM the master (it stops its workers), then KILL its process group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this benchmark created
        self.proc.wait()


def _answers(port: int, method: str, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def gunicorn(
    name: str, argv: Sequence[str], env: Mapping[str, str], tmp: Path, probe: tuple[str, str]
) -> Iterator[Server]:
    """Start a server in its own process group, wait for every worker, always stop it."""
    port = _free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)],
            cwd=tmp,  # no stray .env from the working directory
            env={**os.environ, **env, "PYTHONPATH": str(_REPO_ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, proc, port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
            server.workers = _children(proc.pid)
            if len(server.workers) == WORKERS and _answers(port, *probe):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not start in {START_TIMEOUT_S} s:\n{server.log_tail()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


# -- load ----------------------------------------------------------------------

Make = Callable[[int], tuple[dict[str, str], bytes]]
Check = Callable[[int, bytes], bool]


@dataclass
class Window:
    """One measured window of closed-loop load against one server."""

    requests: int
    errors: int
    seconds: float
    latencies_ns: list[float]
    client_cpu_s: float
    server_cpu_s: float
    worker_share: list[float]  # each worker's share of the workers' CPU
    machine_busy: float  # share of all CPUs busy during the window
    others_busy: float  # the share of it used by neither the server nor this process
    first_error: str | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies_ns, q)


def load(server: Server, make: Make, check: Check, seconds: float, cap: int) -> Window:
    """`CLIENTS` threads send requests back to back until `seconds` pass or `cap` are sent.

    Each thread holds one keep-alive connection, opened before the clock starts.
    Latency is from the first byte sent to the last byte read, as a Slack client
    would see it; failed or unexpected answers are counted, never timed.
    """
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0] * CLIENTS
    first_error: list[str] = []
    deadline = [0.0]

    def start() -> None:
        deadline[0] = time.perf_counter() + seconds

    barrier = threading.Barrier(CLIENTS + 1, action=start)

    def client(k: int) -> None:
        conn = Connection(server.port)
        with suppress(OSError):  # if this fails, the first post tries again and counts it
            conn.connect()
        mine = latencies[k]
        clock = time.perf_counter_ns
        barrier.wait(REQUEST_TIMEOUT_S)
        stop = deadline[0]
        try:
            while time.perf_counter() < stop:
                i = next(counter)
                if i >= cap:
                    break
                headers, body = make(i)
                begin = clock()
                try:
                    status, answer = conn.post(PATH, headers, body)
                except OSError as exc:
                    errors[k] += 1
                    first_error.append(f"{type(exc).__name__}: {exc}")
                    conn.close()  # the next post reconnects
                    continue
                elapsed = clock() - begin
                if check(status, answer):
                    mine.append(elapsed)
                else:
                    errors[k] += 1
                    first_error.append(f"HTTP {status}: {answer[:200]!r}")
        finally:
            conn.close()

    server.workers = _children(server.proc.pid)  # in case gunicorn replaced one
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    cpu_before, server_before, machine_before = time.process_time(), server.cpu(), _machine_ticks()
    barrier.wait(REQUEST_TIMEOUT_S)
    begin = time.perf_counter()
    for t in threads:
        t.join(seconds + 2 * REQUEST_TIMEOUT_S)
    elapsed = time.perf_counter() - begin
    cpu_after, server_after, machine_after = time.process_time(), server.cpu(), _machine_ticks()
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"{server.name}: a client thread is stuck")

    used = {pid: server_after[pid] - server_before.get(pid, 0.0) for pid in server_after}
    worker_cpu = [used.get(pid, 0.0) for pid in server.workers]
    total_workers = sum(worker_cpu) or 1.0
    total_ticks = max(1, machine_after[1] - machine_before[1])
    busy_ticks = machine_after[0] - machine_before[0]
    ours = (sum(used.values()) + cpu_after - cpu_before) * _TICK
    flat = [x for per in latencies for x in per]
    if not flat:
        raise RuntimeError(f"{server.name}: no request succeeded; first error: {first_error[:1]}")
    return Window(
        requests=len(flat),
        errors=sum(errors),
        seconds=elapsed,
        latencies_ns=flat,
        client_cpu_s=cpu_after - cpu_before,
        server_cpu_s=sum(used.values()),
        worker_share=[w / total_workers for w in worker_cpu],
        machine_busy=busy_ticks / total_ticks,
        others_busy=max(0.0, busy_ticks - ours) / total_ticks,
        first_error=first_error[0] if first_error else None,
    )


def _window_line(label: str, w: Window) -> str:
    per = max(1, w.requests)
    split = "/".join(f"{s * 100:.0f}" for s in w.worker_share)
    errors = f"; {w.errors:,} ERRORS (first: {w.first_error})" if w.errors else ""
    return (
        f"{label}: {w.requests:,} in {w.seconds:.2f} s = {fmt_count(w.rps)} req/s; "
        f"p50 {fmt_ns(w.p(50))}, p99 {fmt_ns(w.p(99))}; CPU per request: server "
        f"{fmt_ns(w.server_cpu_s * 1e9 / per)} (workers {split}%), client "
        f"{fmt_ns(w.client_cpu_s * 1e9 / per)}; machine {w.machine_busy * 100:.0f}% busy, "
        f"{w.others_busy * 100:.0f}% by other processes{errors}"
    )


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


def bare_answered(status: int, body: bytes) -> bool:
    return status == 200


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
        return sum(max(w.worker_share, default=0.0) > LOPSIDED for w in (*self.bare, *self.show))

    @property
    def show_p99_ms(self) -> float:
        return statistics.median(w.p(99) for w in self.show) / 1e6


def measure_show(bare: Server, app: Server, make: Make, sizes: Sizes) -> Throughput:
    """Warm both servers up, then alternate measured windows and summarise medians."""
    load(bare, make, bare_answered, sizes.warmup_seconds, sizes.max_requests)
    load(app, make, show_answered, sizes.warmup_seconds, sizes.max_requests)
    say(
        f"warm-up: {sizes.warmup_seconds:.1f} s per server; then {sizes.rounds} rounds of "
        f"{sizes.seconds:.1f} s each (at most {sizes.max_requests:,} requests), "
        "alternating which server goes first"
    )
    windows: dict[str, list[Window]] = {"bare": [], "show": []}
    targets = {"bare": (bare, bare_answered), "show": (app, show_answered)}
    for r in range(sizes.rounds):
        order = ("bare", "show") if r % 2 == 0 else ("show", "bare")
        for name in order:
            server, check = targets[name]
            window = load(server, make, check, sizes.seconds, sizes.max_requests)
            windows[name].append(window)
            label = "bare Flask 200 " if name == "bare" else "/wa-role show  "
            say(_window_line(f"  round {r + 1} {label}", window))
    result = Throughput(windows["bare"], windows["show"])
    for name, label in (("bare", "bare Flask 200"), ("show", "/wa-role show ")):
        ws = windows[name]
        say(
            f"median {label}: {fmt_count(statistics.median(w.rps for w in ws))} req/s, "
            f"p50 {fmt_ns(statistics.median(w.p(50) for w in ws))}, "
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
        f"show / bare throughput: {result.ratio:.2f}x (median of the rounds {per_round}); "
        f"server CPU per request bare / show: {cpu_ratio:.2f}x"
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
            f"{LOPSIDED * 100:.0f}% of the requests (all keep-alive connections landed on it); "
            "the per-round median keeps such a window from deciding the ratio alone"
        )
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
            }
            bare = stack.enter_context(
                gunicorn("bare", [sys.executable, "-m", "bench.bare_app"], {}, tmp, ("POST", PATH))
            )
            app = stack.enter_context(
                gunicorn(
                    "wa-access",
                    [sys.executable, "-m", "bot.cli", "serve"],
                    env,
                    tmp,
                    ("GET", "/healthz"),
                )
            )
            say(
                f"database: {url} (migrated; 1 admin, {len(TEAM)} people, {fresh:,} fresh "
                "users for assign; removed afterwards)"
            )
            say(
                f"servers:  bare Flask 200 (python -m bench.bare_app) and `wa-access serve`, "
                f"both through bot.server.serve: gunicorn {_worker_class(bare)}/"
                f"{_worker_class(app)}, {WORKERS} workers each; fake Slack Web API at {slack.url}"
            )
            say(
                f"client:   {CLIENTS} threads in this process, one keep-alive connection each, "
                "every request signed afresh (v0 HMAC-SHA256); the same signed "
                "`/wa-role show` POSTs go to both servers"
            )
            throughput = measure_show(bare, app, show_requests(response_url), sizes)

            say()
            users = (_fresh_user(i) for i in range(fresh))
            assign_confirm(app, users, sizes.warmup_pairs, 1, response_url)
            pairs = [assign_confirm(app, users, sizes.pairs, n, response_url) for n in (1, CLIENTS)]
            for p in pairs:
                say(_pairs_line(p))
            posted = [r for r in slack.responses() if "Assigned analyst to" in str(r.get("text"))]
            problems = bare.problems() + app.problems()
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
    say(
        f"/wa-role show p99 < {P99_BAR_MS:.0f} ms at that load: "
        f"{verdict(throughput.show_p99_ms < P99_BAR_MS)} ({throughput.show_p99_ms:.1f} ms, "
        "median of the rounds)"
    )


def _worker_class(server: Server) -> str:
    """The worker class gunicorn says it uses, read from its log."""
    for line in server.log.read_text(errors="replace").splitlines():
        if "Using worker:" in line:
            return line.rsplit(":", 1)[1].strip()
    return "?"
