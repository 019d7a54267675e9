"""Claims on scheduled periods: of N schedulers sharing a database, one runs each period.

APScheduler's own FAQ says several schedulers cannot share one job store, so
each scheduler keeps its jobs in memory and the database decides who runs:
a run first inserts the row (job, period); the primary key lets exactly one
insert succeed. The row is a lease (leases.py, shared with the outbox),
renewed while the run works, but never past the run's time bound
(`Claim.deadline`), so a run that hangs lets go in the end. A run that
dies (killed, host lost) stops renewing; once its lease lapses, another
scheduler takes the period over. A run that fails cleanly gives its lease
up, and the period is retried after a delay that doubles.

Every claimed period ends exactly once, in `done` or `given_up`: each look
also settles the job's unfinished claims (`JobRuns.settle`), not only the
latest period, and gives up, with one conditional UPDATE that only one of
several schedulers can win, those that can no longer run: superseded by a
newer period, out of attempts, or past the grace time. Whoever wins alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..clock import Clock, system_clock, utcnow
from ..values import period_start
from . import leases
from .db import Database
from .models import JobRun

LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 5
RETRY_AFTER = timedelta(minutes=5)  # then 10, 20, 40: a Slack outage of an hour is outlasted
MAX_RUN = timedelta(hours=2)  # the longest one attempt may hold its period, however it renews
SUMMARY_MAX = 1000
UNFINISHED = ("running", "failed")

Status = Literal["done", "failed", "given_up"]


def retry_delay(attempt: int) -> timedelta:
    """How long after failed attempt number `attempt` the next one may start."""
    factor: int = 2 ** (attempt - 1)
    return RETRY_AFTER * factor


_RUNS = cast(Table, JobRun.__table__)


@dataclass(frozen=True)
class Claim:
    """The right to run one period of one job, as long as the lease is renewed.

    `deadline` bounds the attempt: the lease is never renewed past it, so a run
    that hangs cannot hold its period for ever, heartbeat or not.
    """

    job: str
    period: str
    owner: str
    attempt: int
    deadline: datetime


def _takeable(run: JobRun, now: datetime) -> bool:
    if run.attempt >= MAX_ATTEMPTS:
        return False
    if run.status == "failed":
        return run.finished_at is None or run.finished_at + retry_delay(run.attempt) <= now
    return run.status == "running" and run.lease_until < now


@dataclass(frozen=True)
class Verdict:
    """What a look does with one unfinished claim: leave it, take it over, or give it up."""

    action: Literal["wait", "take", "give_up"]
    why: str = ""


WAIT = Verdict("wait")


def verdict(run: JobRun, now: datetime, grace: timedelta, newest: str) -> Verdict:
    """The rule for an unfinished claim, the same on every scheduler.

    A live lease is left alone. Otherwise the claim is given up when a newer
    period of the job has been claimed (its run covers what this one would
    have done), when no attempt is left, or when its next attempt could not
    start within `grace` of the period's start (the window in which a missed
    period may still run); else it is taken over at once (a run that stopped
    renewing) or retried once its delay has passed (a run that failed).
    """
    if run.status == "running" and run.lease_until >= now:
        return WAIT
    if run.status == "running":
        what = f"attempt {run.attempt} by {run.owner} stopped renewing its claim"
        next_try = now
    else:
        what = f"attempt {run.attempt} {run.summary or 'failed'}"
        retry_at = run.finished_at + retry_delay(run.attempt) if run.finished_at else now
        next_try = max(now, retry_at)
    if run.period < newest:
        return Verdict("give_up", f"{what}; superseded by {newest}")
    if run.attempt >= MAX_ATTEMPTS:
        return Verdict("give_up", f"{what}; no attempt left of {MAX_ATTEMPTS}")
    start = period_start(run.period)
    if start is None or next_try > start + grace:
        return Verdict("give_up", f"{what}; no attempt fits in the grace time any more")
    return Verdict("take") if next_try == now else WAIT


@dataclass(frozen=True)
class GivenUp:
    job: str
    period: str
    why: str


@dataclass(frozen=True)
class Settled:
    """What one look did with a job's unfinished claims."""

    given_up: tuple[GivenUp, ...]
    """Periods this scheduler gave up: it alone must alert about them."""
    takeable: str | None
    """The newest period that may be taken over or retried now, if any."""


class LostClaim(RuntimeError):
    """Raised when a run finds its lease was taken over: it must stop at once."""


class RunTooLong(LostClaim):
    """Raised when a run checks in after its time bound: it must stop; its period is retried."""


class JobRuns:
    def __init__(
        self, db: Database, clock: Clock = system_clock, *, lease: timedelta = LEASE
    ) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease

    def claim(
        self, job: str, period: str, owner: str, *, max_run: timedelta = MAX_RUN
    ) -> Claim | None:
        """The claim on (job, period), or None when another run has it or it is done.

        The attempt may hold the period for `max_run` at most (see `Claim.deadline`).
        """
        now = utcnow(self.clock)
        seen = self.status(job, period)
        if seen is not None and not _takeable(seen, now):
            return None  # the common case on every look after the first: no write at all
        deadline = now + max_run
        try:
            with self.db.write() as session:
                session.add(
                    JobRun(
                        job=job,
                        period=period,
                        owner=owner,
                        attempt=1,
                        status="running",
                        claimed_at=now,
                        lease_until=min(now + self.lease, deadline),
                    )
                )
            return Claim(job, period, owner, 1, deadline)
        except IntegrityError:
            pass  # someone claimed it first: take it over only if that run died or failed
        attempt = self._take_over(job, period, owner, now, deadline)
        return None if attempt is None else Claim(job, period, owner, attempt, deadline)

    def _take_over(
        self, job: str, period: str, owner: str, now: datetime, deadline: datetime
    ) -> int | None:
        """The next attempt number if this scheduler took the period over, else None."""
        with self.db.transaction(write=True) as txn:
            row = txn.session.execute(
                select(_RUNS.c.attempt).where(_RUNS.c.job == job, _RUNS.c.period == period)
            ).first()
            if row is None:
                return None
            attempt = int(row[0]) + 1
            retry_from = now - retry_delay(attempt - 1)
            taken = txn.session.execute(
                update(_RUNS)
                .where(
                    _RUNS.c.job == job,
                    _RUNS.c.period == period,
                    _RUNS.c.attempt == attempt - 1,
                    _RUNS.c.attempt < MAX_ATTEMPTS,
                    or_(
                        and_(_RUNS.c.status == "failed", _RUNS.c.finished_at <= retry_from),
                        leases.lapsed(_RUNS, now),
                    ),
                )
                .values(
                    owner=owner,
                    attempt=attempt,
                    status="running",
                    claimed_at=now,
                    lease_until=min(now + self.lease, deadline),
                    finished_at=None,
                )
            )
            return attempt if taken.rowcount == 1 else None  # type: ignore[attr-defined]

    def renew(self, claim: Claim) -> None:
        """Extend the lease, never past the claim's deadline.

        Raises RunTooLong once the deadline has passed (the run must stop: others
        may take its period over), LostClaim if another scheduler took it over.
        """
        now = utcnow(self.clock)
        if now >= claim.deadline:
            raise RunTooLong(f"{claim.job} {claim.period} ran past its time bound")
        if not self._end(claim, lease_until=min(now + self.lease, claim.deadline)):
            raise LostClaim(f"{claim.job} {claim.period} was taken over by another scheduler")

    def finish(self, claim: Claim, summary: str) -> bool:
        return self._end(claim, "done", summary)

    def fail(self, claim: Claim, summary: str) -> bool:
        """Give the lease up at once, so a later look may retry the period."""
        return self._end(claim, "failed", summary)

    def give_up(self, claim: Claim, why: str) -> bool:
        """End the period of a run's own claim for good (its last attempt failed)."""
        return self._end(claim, "given_up", why)

    def _end(
        self,
        claim: Claim,
        status: Status | None = None,
        summary: str | None = None,
        lease_until: datetime | None = None,
    ) -> bool:
        now = utcnow(self.clock)
        values: dict[str, object] = {}
        if status is not None:
            values.update(status=status, finished_at=now, lease_until=now)
            values["summary"] = (summary or "")[:SUMMARY_MAX]
        if lease_until is not None:
            values["lease_until"] = lease_until
        with self.db.write() as session:
            key = and_(_RUNS.c.job == claim.job, _RUNS.c.period == claim.period)
            return leases.settle(session, _RUNS, key, (claim.owner, claim.attempt), values)

    def settle(self, job: str, grace: timedelta) -> Settled:
        """Give up the job's unfinished claims that can no longer run (see `verdict`).

        Reads first, so a look that finds nothing unfinished writes nothing.
        """
        now = utcnow(self.clock)
        runs, newest = self._unfinished(job)
        given_up: list[GivenUp] = []
        takeable = None
        for run in runs:  # oldest first, so the newest takeable period is the one kept
            ruling = verdict(run, now, grace, newest)
            if ruling.action == "give_up" and self._give_up_stale(run, ruling.why, now):
                given_up.append(GivenUp(job, run.period, ruling.why))
            elif ruling.action == "take":
                takeable = run.period
        return Settled(tuple(given_up), takeable)

    def _unfinished(self, job: str) -> tuple[list[JobRun], str]:
        """The job's running and failed claims, oldest first, and its newest period."""
        with self.db.read() as session:
            runs = list(
                session.scalars(
                    select(JobRun)
                    .where(JobRun.job == job, JobRun.status.in_(UNFINISHED))
                    .order_by(JobRun.period)
                )
            )
            if not runs:
                return runs, ""
            newest = session.scalar(select(func.max(_RUNS.c.period)).where(_RUNS.c.job == job))
        return runs, str(newest)

    def _give_up_stale(self, run: JobRun, why: str, now: datetime) -> bool:
        """Mark a stale claim given up; True for exactly one of the schedulers racing to."""
        with self.db.write() as session:
            result = session.execute(
                update(_RUNS)
                .where(
                    _RUNS.c.job == run.job,
                    _RUNS.c.period == run.period,
                    _RUNS.c.status == run.status,
                    _RUNS.c.attempt == run.attempt,
                    or_(_RUNS.c.status != leases.RUNNING, leases.lapsed(_RUNS, now)),
                )
                .values(
                    status="given_up", finished_at=now, lease_until=now, summary=why[:SUMMARY_MAX]
                )
            )
            return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def status(self, job: str, period: str) -> JobRun | None:
        with self.db.read() as session:
            return session.get(JobRun, (job, period))

    def runs(self, job: str) -> list[JobRun]:
        with self.db.read() as session:
            return list(
                session.scalars(select(JobRun).where(JobRun.job == job).order_by(JobRun.period))
            )
