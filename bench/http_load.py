"""Load over real HTTP against gunicorn: a lean keep-alive client, servers started and
stopped in their own process groups, and CPU accounted per window.

Shared by the Slack round trip and the WhatsApp ingest benchmarks, so both
measure an app and its bare-Flask baseline the same way. The client is a few
threads on keep-alive connections speaking just enough HTTP/1.1 for gunicorn's
answers: `http.client` costs about three times more CPU per request, and on a
small machine the client shares the cores with the server, so its cost comes
off the baseline more than off the slower app and flatters the ratio.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from bot.background_process import PROCESS_NAME

from .report import fmt_count, fmt_ns, percentile

CLIENTS = 8  # as many as the 2 workers x 4 threads can serve at once
WORKERS = 2
# Both servers of every ratio keep each worker to a CPU of its own (`serve --pin-workers`,
# bot/server.py's CpuPinning): the setting an operator would choose for a host the
# server has to itself, as here. The Slack section also measures show without it.
PINNED = True
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
QUIET_BAR = 0.10  # machine busier than this before the run: warn that figures are noisy
LOPSIDED = 0.90  # one worker's share of the workers' CPU above which a window is lopsided
_REPO_ROOT = Path(__file__).resolve().parent.parent


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


def _children(pid: int, *, background: bool = False) -> list[int]:
    """Direct children of `pid`, from /proc: gunicorn's web workers, or (`background`)
    serve's background process (bot/background_process.py), told apart by name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        if int(raw.rsplit(")", 1)[1].split()[1]) == pid and (name == PROCESS_NAME) == background:
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
    background: list[int] = field(default_factory=list)

    def cpu(self) -> dict[int, float]:
        """CPU seconds used so far by the master, each worker and the background process."""
        usage = {}
        for pid in (self.proc.pid, *self.workers, *self.background):
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
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    tmp: Path,
    probe: tuple[str, str],
    *,
    pinned: bool = PINNED,
) -> Iterator[Server]:
    """Start a server in its own process group, wait for every worker, always stop it."""
    port = _free_port()
    log = tmp / f"{name}.log"
    options = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, *options, *(["--pin-workers"] if pinned else [])],
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
    background_cpu_s: float  # of server_cpu_s, what serve's background process used
    machine_busy: float  # share of all CPUs busy during the window
    others_busy: float  # the share of it used by neither the server nor this process
    first_error: str | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies_ns, q)


def load(server: Server, make: Make, check: Check, seconds: float, cap: int, path: str) -> Window:
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
                    status, answer = conn.post(path, headers, body)
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
    server.background = _children(server.proc.pid, background=True)
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
        background_cpu_s=sum(used.get(pid, 0.0) for pid in server.background),
        worker_share=[w / total_workers for w in worker_cpu],
        machine_busy=busy_ticks / total_ticks,
        others_busy=max(0.0, busy_ticks - ours) / total_ticks,
        first_error=first_error[0] if first_error else None,
    )


def window_line(label: str, w: Window) -> str:
    per = max(1, w.requests)
    split = "/".join(f"{s * 100:.0f}" for s in w.worker_share)
    errors = f"; {w.errors:,} ERRORS (first: {w.first_error})" if w.errors else ""
    background = (
        f"; background {fmt_ns(w.background_cpu_s * 1e9 / per)}" if w.background_cpu_s else ""
    )
    return (
        f"{label}: {w.requests:,} in {w.seconds:.2f} s = {fmt_count(w.rps)} req/s; "
        f"p50 {fmt_ns(w.p(50))}, p99 {fmt_ns(w.p(99))}; CPU per request: server "
        f"{fmt_ns(w.server_cpu_s * 1e9 / per)} (workers {split}%{background}), client "
        f"{fmt_ns(w.client_cpu_s * 1e9 / per)}; machine {w.machine_busy * 100:.0f}% busy, "
        f"{w.others_busy * 100:.0f}% by other processes{errors}"
    )
