"""`serve`'s background work in a process of its own, beside gunicorn's web workers.

The webhook intake, the Slack outbox worker and the WhatsApp sender used to run
as threads inside every web worker, where a batch of webhook bodies held the
GIL in bursts of milliseconds while Slack waited for its 3-second ack and Meta
for its 200. Measured through gunicorn (`python -m bench --only
whatsapp-ingest`), the same processing cost twice the CPU per body there as in
a process of its own, and pushed the door's p99 from about 10 ms to 30 ms.

So gunicorn's master forks one background process (`keep_running`, called from
the master's loop, starts it and starts it again should it die) and stops it
with the web workers. It leaves by itself when the master dies (`kill -9`):
what it held is taken over when its leases lapse, as from any worker.

Web workers wake it the moment they commit work (a stored webhook body, a
queued notice) by writing a byte to a pipe opened before any fork; it also
polls, for work written by other machines and for retries falling due.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

from rbac_core import signals

from .config import Settings
from .polling import Poller

log = logging.getLogger(__name__)

PROCESS_NAME = "wa-access-bg"
"""What `ps` and `top` (and tests) show for the background process, on Linux."""
RESTART_AFTER_S = 5.0
"""A background process that died is started again, at most once per this many seconds."""
GATHER_WAKES_S = 0.01
"""The relay reads the pipe at most this often: under load one read then takes a burst of
commits' bytes, where a read per byte cost the background process about a tenth of its
CPU. Pollers of webhooks linger ten times longer than this anyway (intake_worker.py)."""
_WAKING = {
    b"w": signals.webhook_received,
    b"o": signals.outbox_queued,
    b"s": signals.sends_queued,
}
"""What a web worker's commit says through the pipe: the byte names the signal, so only the
pollers waiting for that kind of work wake (a stored webhook must not send the outbox
worker to the database)."""
# Signals gunicorn's master handles that a forked child must not.
_MASTER_SIGNALS = ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")


class BackgroundProcess:
    """The child of gunicorn's master that runs `background_workers`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid: int | None = None
        self._started_at = -math.inf
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._wakers: list[tuple[signals.Signal, Callable[..., None]]] = []

    # -- in gunicorn's master ------------------------------------------------------

    def keep_running(self, listeners: Sequence[int] = ()) -> None:
        """Start the process, or start it again if it ended (not more often than
        RESTART_AFTER_S). `listeners`: the master's listening sockets, which the child
        closes, so a port is never held by a process that answers nothing on it."""
        self.reap()
        if self.pid is not None or self._stopping:
            return
        if time.monotonic() - self._started_at < RESTART_AFTER_S:
            return
        self._started_at = time.monotonic()
        master = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's exit status is what tests see
            for fd in listeners:
                with contextlib.suppress(OSError):
                    os.close(fd)
            os._exit(self._run_child(master))
        self.pid = pid
        log.info("background process started (pid %d)", pid)

    def reap(self) -> None:
        """If the process ended, reap it and say how. Called before gunicorn's master reaps
        every child it does not know (its own `waitpid(-1)`), so the status is not lost and
        the pid is never mistaken for a web worker's that reused it."""
        if self.pid is None:
            return
        try:
            ended, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost, not its end
            ended, status = self.pid, None
        if ended == 0:
            return
        how = "" if status is None else f" ({_described(status)})"
        if not self._stopping:
            log.warning("the background process (pid %d) ended%s; starting another", ended, how)
        self.pid = None

    def terminate(self) -> None:
        """Ask the process to finish what it holds and exit (SIGTERM); `wait` for it."""
        self._stopping = True
        self.reap()
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Until the process ended, or `deadline` (time.monotonic()) passed: then kill it."""
        while self.pid is not None:
            self.reap()
            if self.pid is None:
                return
            if time.monotonic() > deadline:
                log.warning("the background process (pid %d) did not stop; killing it", self.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = float("inf")  # SIGKILL ends it: reap it
            time.sleep(0.05)

    # -- in a web worker -------------------------------------------------------------

    def wake_on_commits(self) -> None:
        """Wake the background process whenever this process commits work for it."""
        for byte, hook in _WAKING.items():
            waker = self._waker(byte)
            hook.connect(waker)
            self._wakers.append((hook, waker))

    def stop_waking(self) -> None:
        """Undo `wake_on_commits` (tests)."""
        for hook, waker in self._wakers:
            hook.disconnect(waker)
        self._wakers.clear()

    def _waker(self, byte: bytes) -> Callable[..., None]:
        def wake(*_: object) -> None:
            # A full pipe means it is woken already; a broken one, that it is gone and polls.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self._wake_write, byte)

        return wake

    # -- in the child ----------------------------------------------------------------

    def _run_child(self, master: int) -> int:
        try:
            _name_this_process(PROCESS_NAME)
            for name in _MASTER_SIGNALS:
                signal.signal(getattr(signal, f"SIG{name}"), signal.SIG_DFL)
            from .background import background_workers
            from .logs import configure_logging
            from .polling import serve_pollers
            from .runtime import build_runtime

            configure_logging(self.settings)
            from .metrics import connect_core_signals  # after serve chose where counters live

            connect_core_signals()  # what the pollers do is counted in /metrics, too
            pollers = background_workers(build_runtime(self.settings))
            threading.Thread(
                target=self._relay_wakes, args=(pollers,), name="wake-relay", daemon=True
            ).start()
            serve_pollers(pollers, parent=master)
            return 0
        except BaseException:
            log.exception("the background process failed")
            return 1

    def _relay_wakes(self, pollers: Sequence[Poller]) -> None:
        try:
            self._relay(pollers)
        except Exception:  # the pollers still poll; they just hear of work later
            log.exception("the background process stopped relaying wake-ups")

    def _relay(self, pollers: Sequence[Poller]) -> None:
        while said := os.read(self._wake_read, 4096):
            for byte, hook in _WAKING.items():
                if byte in said:
                    for poller in pollers:
                        if poller.wakes_on(hook):
                            poller.wake()
            time.sleep(GATHER_WAKES_S)  # the bytes written meanwhile come in one read


def _described(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _name_this_process(name: str) -> None:
    """Name the process as `ps -o comm` shows it (Linux's PR_SET_NAME); elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


_PR_SET_NAME = 15
