"""Requests refused at the door of a surface (Slack, WhatsApp), counted and logged.

A request whose signature does not hold is refused before its body is trusted.
Each refusal is signalled (bot/metrics.py counts them by surface and reason)
and logged without the body, which may carry a 2FA code or a customer's message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from rbac_core.signals import Signal

log = logging.getLogger("wa_access.refusals")

SUMMARY_INTERVAL_S = 60.0


Schedule = Callable[[float, Callable[[], None]], None]


def _daemon_timer(delay: float, action: Callable[[], None]) -> None:
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()


request_refused = Signal(
    "request_refused",
    "(surface: str, reason: str) a request refused before its body was trusted "
    "(bot/metrics.py counts them)",
)


class Refusals:
    """Requests refused at the door, by reason, for one surface of one process.

    The first refusal is logged at once, so a wrong signing secret shows up on
    the first request. Later ones are summed up in one line a minute after the
    last report, so a flood of forged requests cannot flood the log as well, and
    a burst followed by silence is still reported.
    """

    def __init__(
        self,
        surface: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = _daemon_timer,
    ) -> None:
        self.surface = surface
        self._clock = clock
        self._schedule = schedule
        self._lock = threading.Lock()
        self.totals: Counter[str] = Counter()
        self._unreported: Counter[str] = Counter()
        self._last_report: float | None = None
        self._flush_pending = False

    def add(self, reason: str) -> None:
        request_refused.send(self.surface, reason)
        with self._lock:
            self.totals[reason] += 1
            self._unreported[reason] += 1
            now = self._clock()
            if self._last_report is not None and now - self._last_report < SUMMARY_INTERVAL_S:
                if not self._flush_pending:
                    self._flush_pending = True
                    delay = SUMMARY_INTERVAL_S - (now - self._last_report)
                    self._schedule(delay, self.flush)
                return
            report = self._take(now)
        self._log(*report)

    def flush(self) -> None:
        """Log what was refused since the last report, if anything."""
        with self._lock:
            self._flush_pending = False
            if not self._unreported:
                return
            report = self._take(self._clock())
        self._log(*report)

    def _take(self, now: float) -> tuple[Counter[str], int]:
        counts, self._unreported = self._unreported, Counter()
        self._last_report = now
        return counts, sum(self.totals.values())

    def _log(self, counts: Counter[str], total: int) -> None:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        log.warning(
            "%s: refused %d unverified request(s) (%s); %d since start",
            self.surface,
            sum(counts.values()),
            reasons,
            total,
        )
