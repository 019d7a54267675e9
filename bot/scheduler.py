"""`wa-access scheduler`: periodic jobs, run once per period however many replicas run.

APScheduler 3 drives the process with jobs defined here in code and kept in
memory (its FAQ: several schedulers must not share one job store). It does not
decide who runs a period: every minute each scheduler *looks* at each periodic
job, works out the latest period that is due (the job's cron schedule in its
time zone, no older than the job's grace time) and tries to claim it in the
database (`rbac_core.job_runs`). One claim wins per period; a claim whose
run died lapses and is taken over. Looking, rather than firing at 09:00
sharp, is also what runs a missed period once when the process comes back
within the grace time. Each look also settles the job's older unfinished
claims, so every claimed period ends `done` or `given_up` with one alert.

Sweeps of expired access are idempotent and run on every replica.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from slack_sdk import WebClient

from handlers.scheduled.checkpoints import hourly_audit_checkpoint
from handlers.scheduled.jobs import sweep_expired, weekly_review
from rbac_core import signals
from rbac_core.clock import Clock, system_clock, utcnow
from rbac_core.store.job_runs import (
    LEASE,
    MAX_ATTEMPTS,
    MAX_RUN,
    Claim,
    JobRuns,
    LostClaim,
    RunTooLong,
)
from rbac_core.store.leases import default_owner
from rbac_core.values import period_key, period_start

from .runtime import Runtime

log = logging.getLogger(__name__)

LOOK_EVERY = timedelta(minutes=1)
SWEEP_EVERY = timedelta(minutes=5)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Checkpoint = Callable[[], None]
"""Called by a long run between steps: renews its lease, raises LostClaim if it lost it."""


@dataclass(frozen=True)
class Periodic:
    """A job run once per period of its cron schedule.

    Each run does the job as of now (the review looks at the whole workspace),
    so a newer period's run covers an older one's: an older period left
    unfinished is given up, with an alert, once a newer one has been claimed.
    """

    name: str
    trigger: CronTrigger
    grace: timedelta
    run: Callable[[datetime, Checkpoint], str]
    """Does the period's work; returns a one-line summary for `job_runs`."""

    @property
    def max_run(self) -> timedelta:
        """How long one attempt may hold its period: half the grace time, 2 hours at most.

        Half, so that an attempt that hangs from the period's start still leaves
        time for another to start within the grace time.
        """
        return min(MAX_RUN, self.grace / 2)

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


class Heartbeat:
    """Renews a run's lease in the background, so one long step cannot lose it.

    Checkpoints between steps still renew too, and are where a run learns it lost
    its claim (`LostClaim`) or ran past its time bound (`RunTooLong`). The
    heartbeat stops renewing at the claim's deadline, so a run that hangs lets
    its period go and another scheduler takes it over or gives it up.
    """

    EVERY = LEASE / 3

    def __init__(self, runs: JobRuns, claim: Claim) -> None:
        self.runs = runs
        self.claim = claim
        self._lost = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopped.wait(self.EVERY.total_seconds()):
            try:
                self.runs.renew(self.claim)
            except RunTooLong:
                log.error("%s %s runs too long: no longer renewing its claim", *self._names())
                return
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
        self.on_gave_up = on_gave_up  # (job, period, why): a claimed period was given up

    def look(self, job: Periodic) -> Ran | None:
        """Settle `job`'s claims and run one period if this scheduler wins it; None if none.

        The due period is claimed first, so that the settling sees it as the
        newest and gives up what it supersedes; a stale claim is run again
        only when it is the newest and still within the grace time.
        """
        due = job.due(utcnow(self.clock))
        claim = None
        if due is not None:
            claim = self.runs.claim(job.name, period_key(due), self.owner, max_run=job.max_run)
        settled = self.runs.settle(job.name, job.grace)
        for each in settled.given_up:
            self._gave_up(job.name, each.period, each.why)
        if claim is None and settled.takeable is not None:
            claim = self.runs.claim(job.name, settled.takeable, self.owner, max_run=job.max_run)
        if claim is None:
            return None
        return self._run(job, claim)

    def _run(self, job: Periodic, claim: Claim) -> Ran:
        """Run one attempt of a claimed period and record how it ended."""
        period = period_start(claim.period)
        assert period is not None  # claimed from `due`, or settled: always a period_key
        log.info("running %s for %s (attempt %d)", job.name, claim.period, claim.attempt)
        heartbeat = Heartbeat(self.runs, claim)
        summary, error = "", None
        try:
            summary = job.run(period, heartbeat.checkpoint)
        except Exception as exc:
            error = exc
        finally:
            heartbeat.stop()  # before the end is recorded: no renewal may race it
        if error is not None:
            return self._stopped(job, claim, error)
        if not self.runs.finish(claim, summary):
            log.warning("%s for %s finished after its claim was lost", job.name, claim.period)
            return Ran(job.name, claim.period, "lost", summary)
        log.info("%s for %s done: %s", job.name, claim.period, summary)
        signals.job_finished.send(job.name, "done")
        return Ran(job.name, claim.period, "done", summary)

    def _stopped(self, job: Periodic, claim: Claim, exc: Exception) -> Ran:
        """A run that raised: a failure to retry, unless its period is no longer its own."""
        if isinstance(exc, RunTooLong):
            bound = f"{job.max_run.total_seconds() / 60:g} minutes"
            log.error("%s for %s stopped: it ran past %s", job.name, claim.period, bound)
            return self._failed(job, claim, f"ran past its time bound of {bound}")
        if isinstance(exc, LostClaim):
            log.warning("%s for %s was taken over by another scheduler", job.name, claim.period)
            return Ran(job.name, claim.period, "lost", "taken over")
        log.error("%s for %s failed", job.name, claim.period, exc_info=exc)
        return self._failed(job, claim, f"failed: {type(exc).__name__}")

    def _failed(self, job: Periodic, claim: Claim, why: str) -> Ran:
        """Record a failed attempt: retried later, or, the last one, the period given up."""
        if claim.attempt < MAX_ATTEMPTS:
            if not self.runs.fail(claim, why):
                return Ran(job.name, claim.period, "lost", why)
            signals.job_finished.send(job.name, "failed")
        else:
            if not self.runs.give_up(claim, why):
                return Ran(job.name, claim.period, "lost", why)
            self._gave_up(job.name, claim.period, why)
        return Ran(job.name, claim.period, "failed", why)

    def _gave_up(self, job: str, period: str, why: str) -> None:
        """Tell operators, once: only the scheduler that marked the period given up calls this."""
        log.error("%s for %s given up: %s", job, period, why)
        signals.job_finished.send(job, "given_up")
        if self.on_gave_up is None:
            return
        try:
            self.on_gave_up(job, period, why)
        except Exception:  # the next period's alert must not be lost with this one
            log.exception("alerting that %s for %s was given up failed", job, period)

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
CHECKPOINT_JOB = "audit_checkpoint"
CHECKPOINT_SCHEDULE = "0 * * * *"
_AFTER_GIVING_UP = {
    REVIEW_JOB: "run `wa-access audit run --post` if it is still needed",
    CHECKPOINT_JOB: "the next hour's checkpoint covers its entries; "
    "`wa-access audit checkpoint` makes one now",
}


def build_scheduler(runtime: Runtime, client: WebClient, *, owner: str | None = None) -> Scheduler:
    """The production jobs: the weekly access review, the hourly signed audit checkpoint
    (only with WA_SECRET_KEY, which signs it) and the expiry sweeps."""
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
    jobs = [review]
    if settings.secret_key:
        jobs.append(
            Periodic(
                CHECKPOINT_JOB,
                cron(CHECKPOINT_SCHEDULE, settings.timezone),
                timedelta(hours=1),
                hourly_audit_checkpoint(
                    gate, client, settings.audit_channel, settings.audit_checkpoint_file
                ),
            )
        )
    alert_channel = settings.alert_channel

    def gave_up(job: str, period: str, why: str) -> None:
        if alert_channel is None:
            return
        try:
            client.chat_postMessage(
                channel=alert_channel,
                text=f":warning: The {job.replace('_', ' ')} for {period} was given up "
                f"({why}) and will not run again; {_AFTER_GIVING_UP.get(job, 'see the logs')}.",
            )
        except Exception:
            log.error("could not post the scheduler alert to %s", alert_channel)

    return Scheduler(
        JobRuns(runtime.db, gate.clock),
        jobs,
        lambda: sweep_expired(gate),
        clock=gate.clock,
        owner=owner,
        on_gave_up=gave_up,
    )
