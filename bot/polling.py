"""The loop every background worker runs: work until idle, then sleep until woken.

A worker (the outbox's, the webhook intake's) does one batch at a time
(`run_once`), goes on while batches come back non-empty, and then sleeps until
a signal from its own process says new work committed (`wake_on`), or for at
most `poll` seconds: that is how it sees work written by other processes and
retries falling due. It never raises out of the loop: a database that went
away is waited out. Inside `serve` it is a daemon thread, so it dies with its
process; what it held is taken over by another worker once its lease lapses.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

from rbac_core.signals import Signal

log = logging.getLogger(__name__)

IDLE_AFTER_ERROR_SECONDS = 5.0


class Poller(ABC):
    thread_name = "worker"
    linger = 0.0
    """Seconds to let work gather after a wake-up or a batch short of `full`: a worker
    whose per-batch cost dwarfs its per-item cost (the webhook intake: one transaction
    and one audit entry a batch) does far less work per item in fewer, fuller batches."""
    full = 1
    """A batch this large is run again at once, without lingering."""

    def __init__(self, poll: float, wake_on: Sequence[Signal] = ()) -> None:
        self.poll = poll
        self._wake_on = tuple(wake_on)
        self._wake = threading.Event()
        self._stop = threading.Event()

    @abstractmethod
    def run_once(self) -> int:
        """Do one batch; how many items it held (0: nothing was due)."""

    def run_until_idle(self) -> int:
        """Work until nothing is due (`wa-access worker --once`, tests, the demo)."""
        total = 0
        while handled := self.run_once():
            total += handled
        return total

    def was_full(self, handled: int) -> bool:
        """Whether the batch just run was full, so more may be due at once: no lingering."""
        return handled >= self.full

    def wakes_on(self, hook: Signal) -> bool:
        """Whether a commit that sends `hook` is work for this poller."""
        return hook in self._wake_on

    def wake(self, *_: object) -> None:
        self._wake.set()

    def run_forever(self) -> None:
        """Work until `stop()`; never raises."""
        for hook in self._wake_on:
            hook.connect(self.wake)
        try:
            while not self._stop.is_set():
                try:
                    handled = self.run_once()
                except Exception:
                    log.exception("%s could not take work; trying again soon", self.thread_name)
                    self._stop.wait(IDLE_AFTER_ERROR_SECONDS)
                    continue
                if handled == 0:
                    self._wake.wait(self.poll)
                    self._wake.clear()
                if not self.was_full(handled) and self.linger:
                    self._stop.wait(self.linger)
        finally:
            for hook in self._wake_on:
                hook.disconnect(self.wake)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def start(self) -> threading.Thread:
        """Run in a daemon thread (inside `serve`)."""
        thread = threading.Thread(target=self.run_forever, name=self.thread_name, daemon=True)
        thread.start()
        return thread


def serve_pollers(pollers: Sequence[Poller], *, parent: int | None = None) -> None:
    """`wa-access worker` and `serve`'s background process: run every poller until SIGTERM
    or SIGINT, or until the process `parent` is gone, then let each finish the item in hand."""
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        log.info("workers stopping (signal %d)", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [poller.start() for poller in pollers]
    while not stopping.wait(1.0):  # woken by the handler; the timeout keeps signals prompt
        if parent is not None and os.getppid() != parent:
            log.warning("workers stopping: the process that started them is gone")
            break
    for poller in pollers:
        poller.stop()
    for thread in threads:
        thread.join(timeout=30)
