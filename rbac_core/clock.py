"""Time, injectable: every rule about expiry reads the clock through here."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""Seconds since the epoch, like time.time; tests pass a clock they can move."""


# time.time itself, not a wrapper: the clock is read on every memoised decision.
system_clock: Clock = time.time


def utcnow(clock: Clock = system_clock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


class ManualClock:
    """A clock that moves only when told to: for tests and simulations."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
