"""`wa-access scheduler`: periodic jobs, run once per period however many replicas run.

APScheduler 3 drives the process with jobs defined here in code and kept in
memory (its FAQ: several schedulers must not share one job store). It does not
decide who runs a period: every minute each scheduler *looks* at each periodic
job, works out the latest period that is due (the job's cron schedule in its
time zone, no older than the job's grace time) and tries to claim it in the
database (`rbac_core.job_runs`). One claim wins per period; a claim whose
run died lapses and is taken over. Looking, rather than firing at 09:00
sharp, is also what runs a missed period once when the process comes back
within the grace time.

Sweeps of expired access are idempotent and run on every replica.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from slack_sdk import WebClient

from handlers.scheduled_jobs import slack_notifier, sweep_expired, weekly_review
from rbac_core.clock import Clock, system_clock, utcnow
from rbac_core.job_runs import LEASE, MAX_ATTEMPTS, Claim, JobRuns, LostClaim, period_key

from .runtime import Runtime

log = logging.getLogger(__name__)

LOOK_EVERY = timedelta(minutes=1)
SWEEP_EVERY = timedelta(minutes=5)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Checkpoint = Callable[[], None]
"""Called by a long run between steps: renews its lease, raises LostClaim if it lost it."""


@dataclass(frozen=True)
class Periodic:
    """A job run once per period of its cron schedule."""

    name: str
    trigger: CronTrigger
    grace: timedelta
    run: Callable[[datetime, Checkpoint], str]
    """Does the period's work; returns a one-line summary for `job_runs`."""

    def due(self, now: datetime) -> datetime | None:
        """The latest scheduled moment at or before `now` and within the grace time."""
        moment = self.trigger.get_next_fire_time(None, now - self.grace)
        latest = None
        while moment is not None and moment <= now:
            latest = moment
            # Step in UTC: in the hour a clock change repeats, local time plus a
            # microsecond can fold back onto the first occurrence and loop forever.
            after = moment.astimezone(UTC) + timedelta(microseconds=1)
            moment = self.trigger.get_next_fire_time(None, after)
            if moment is not None and moment.astimezone(UTC) <= latest.astimezone(UTC):
                break
        return None if latest is None else latest.astimezone(UTC)


def cron(expression: str, timezone: str) -> CronTrigger:
    """A crontab line (`0 9 * * mon`) in an IANA time zone; ValueError if malformed."""
    return CronTrigger.from_crontab(expression, timezone=timezone)


def default_owner() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


class Heartbeat:
    """Renews a run's lease in the background, so one long step cannot lose it.

    Checkpoints between steps still renew too, and are where a run learns it lost
    its claim (`LostClaim`). A run that hangs stops being renewed after
    `MAX_RUN`, so its period can be taken over in the end.
    """

    EVERY = LEASE / 3
    MAX_RUN = timedelta(hours=2)

    def __init__(self, runs: JobRuns, claim: Claim) -> None:
        self.runs = runs
        self.claim = claim
        self._lost = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        deadline = time.monotonic() + self.MAX_RUN.total_seconds()
        while not self._stopped.wait(self.EVERY.total_seconds()):
            if time.monotonic() > deadline:
                log.error("%s %s runs too long: no longer renewing its claim", *self._names())
                return
            try:
                self.runs.renew(self.claim)
            except LostClaim:
                self._lost.set()
                return
            except Exception:  # the database away for a moment: try again next beat
                log.warning("renewing the claim of %s %s failed", *self._names())

    def _names(self) -> tuple[str, str]:
        return self.claim.job, self.claim.period

    def checkpoint(self) -> None:
        if self._lost.is_set():
            raise LostClaim(f"{self.claim.job} {self.claim.period} was taken over")
        self.runs.renew(self.claim)

    def stop(self) -> None:
        """Stop beating; returns once no renewal is under way any more."""
        self._stopped.set()
        self._thread.join(timeout=30)


@dataclass(frozen=True)
class Ran:
    job: str
    period: str
    status: str  # done, failed, lost
    summary: str


class Scheduler:
    def __init__(
        self,
        runs: JobRuns,
        periodic: Sequence[Periodic],
        sweep: Callable[[], object] | None = None,
        *,
        clock: Clock = system_clock,
        owner: str | None = None,
        on_gave_up: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.runs = runs
        self.periodic = list(periodic)
        self.sweep = sweep
        self.clock = clock
        self.owner = owner or default_owner()
        self.on_gave_up = on_gave_up  # (job, period, why): the last attempt failed

    def look(self, job: Periodic) -> Ran | None:
        """Run `job`'s due period if this scheduler wins its claim; None if nothing to do."""
        period = job.due(utcnow(self.clock))
        if period is None:
            return None
        key = period_key(period)
        claim = self.runs.claim(job.name, key, self.owner)
        if claim is None:
            return None
        log.info("running %s for %s (attempt %d)", job.name, key, claim.attempt)
        heartbeat = Heartbeat(self.runs, claim)
        try:
            summary = job.run(period, heartbeat.checkpoint)
        except LostClaim:
            log.warning("%s for %s was taken over by another scheduler; stopped", job.name, key)
            return Ran(job.name, key, "lost", "taken over")
        except Exception as exc:
            log.exception("%s for %s failed", job.name, key)
            why = f"failed: {type(exc).__name__}"
            self.runs.fail(claim, why)
            if claim.attempt >= MAX_ATTEMPTS and self.on_gave_up is not None:
                self.on_gave_up(job.name, key, why)
            return Ran(job.name, key, "failed", type(exc).__name__)
        finally:
            heartbeat.stop()
        if not self.runs.finish(claim, summary):
            log.warning("%s for %s finished after its claim was taken over", job.name, key)
            return Ran(job.name, key, "lost", summary)
        log.info("%s for %s done: %s", job.name, key, summary)
        return Ran(job.name, key, "done", summary)

    def tick(self) -> list[Ran]:
        """One look at every periodic job, then a sweep: what tests call after moving the clock."""
        ran = [r for job in self.periodic if (r := self._safe_look(job)) is not None]
        self.sweep_now()
        return ran

    def _safe_look(self, job: Periodic) -> Ran | None:
        try:
            return self.look(job)
        except Exception:  # the database away for a minute must not stop the scheduler
            log.exception("looking at %s failed", job.name)
            return None

    def sweep_now(self) -> None:
        if self.sweep is None:
            return
        try:
            self.sweep()
        except Exception:
            log.exception("sweeping expired access failed")

    def serve(self) -> None:
        """Block, running looks and sweeps, until SIGTERM or SIGINT."""
        scheduler = BlockingScheduler(timezone=UTC)
        start = datetime.now(UTC)
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "next_run_time": start}
        for job in self.periodic:
            scheduler.add_job(
                self._safe_look,
                IntervalTrigger(seconds=LOOK_EVERY.total_seconds()),
                args=(job,),
                id=f"look:{job.name}",
                **common,
            )
        if self.sweep is not None:
            scheduler.add_job(
                self.sweep_now,
                IntervalTrigger(seconds=SWEEP_EVERY.total_seconds()),
                id="sweep",
                **common,
            )

        def stop(signum: int, frame: object) -> None:
            log.info("scheduler stopping (signal %d)", signum)
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("scheduler %s started: %s", self.owner, ", ".join(j.name for j in self.periodic))
        scheduler.start()


REVIEW_JOB = "weekly_access_review"


def build_scheduler(runtime: Runtime, client: WebClient, *, owner: str | None = None) -> Scheduler:
    """The production jobs: the weekly access review and the expiry sweeps."""
    settings = runtime.settings
    if settings.audit_channel is None:
        raise ValueError("WA_AUDIT_CHANNEL is required to post the access review")
    gate = runtime.gate
    review = Periodic(
        REVIEW_JOB,
        cron(settings.audit_schedule, settings.timezone),
        timedelta(hours=settings.audit_grace_hours),
        weekly_review(gate, client, settings.audit_channel, settings.audit_inactive_days),
    )
    notify = slack_notifier(client)
    alert_channel = settings.alert_channel

    def gave_up(job: str, period: str, why: str) -> None:
        log.error("%s for %s gave up after %d attempts (%s)", job, period, MAX_ATTEMPTS, why)
        if alert_channel is None:
            return
        try:
            client.chat_postMessage(
                channel=alert_channel,
                text=f":warning: The {job.replace('_', ' ')} for {period} failed "
                f"{MAX_ATTEMPTS} times ({why}) and will not be retried; "
                "run `wa-access audit run --post` once the cause is fixed.",
            )
        except Exception:
            log.error("could not post the scheduler alert to %s", alert_channel)

    return Scheduler(
        JobRuns(runtime.db, gate.clock),
        [review],
        lambda: sweep_expired(gate, notify),
        clock=gate.clock,
        owner=owner,
        on_gave_up=gave_up,
    )
