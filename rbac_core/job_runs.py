"""Claims on scheduled periods: of N schedulers sharing a database, one runs each period.

APScheduler's own FAQ says several schedulers cannot share one job store, so
each scheduler keeps its jobs in memory and the database decides who runs:
a run first inserts the row (job, period); the primary key lets exactly one
insert succeed. The row is a lease, renewed while the run works. A run that
dies (killed, host lost) stops renewing; once its lease lapses, the next
scheduler to look takes the period over. A run that fails cleanly gives its
lease up, and the period is retried after a delay that doubles each time.
Attempts are capped, so a period that fails every time is reported and left
alone rather than retried forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from .clock import Clock, system_clock, utcnow
from .db import Database
from .models import JobRun

LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 5
RETRY_AFTER = timedelta(minutes=5)  # then 10, 20, 40: a Slack outage of an hour is outlasted
SUMMARY_MAX = 1000


def retry_delay(attempt: int) -> timedelta:
    """How long after failed attempt number `attempt` the next one may start."""
    factor: int = 2 ** (attempt - 1)
    return RETRY_AFTER * factor


_RUNS = cast(Table, JobRun.__table__)


@dataclass(frozen=True)
class Claim:
    """The right to run one period of one job, as long as the lease is renewed."""

    job: str
    period: str
    owner: str
    attempt: int


def period_key(moment: datetime) -> str:
    """A period's name in `job_runs`: its scheduled start, in UTC, to the minute."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _takeable(run: JobRun, now: datetime) -> bool:
    if run.attempt >= MAX_ATTEMPTS:
        return False
    if run.status == "failed":
        return run.finished_at is None or run.finished_at + retry_delay(run.attempt) <= now
    return run.status == "running" and run.lease_until < now


class LostClaim(RuntimeError):
    """Raised when a run finds its lease was taken over: it must stop at once."""


class JobRuns:
    def __init__(
        self, db: Database, clock: Clock = system_clock, *, lease: timedelta = LEASE
    ) -> None:
        self.db = db
        self.clock = clock
        self.lease = lease

    def claim(self, job: str, period: str, owner: str) -> Claim | None:
        """The claim on (job, period), or None when another run has it or it is done."""
        now = utcnow(self.clock)
        seen = self.status(job, period)
        if seen is not None and not _takeable(seen, now):
            return None  # the common case on every look after the first: no write at all
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
                        lease_until=now + self.lease,
                    )
                )
            return Claim(job, period, owner, 1)
        except IntegrityError:
            pass  # someone claimed it first: take it over only if that run died or failed
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
                        and_(_RUNS.c.status == "running", _RUNS.c.lease_until < now),
                    ),
                )
                .values(
                    owner=owner,
                    attempt=attempt,
                    status="running",
                    claimed_at=now,
                    lease_until=now + self.lease,
                    finished_at=None,
                )
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return None
        return Claim(job, period, owner, attempt)

    def renew(self, claim: Claim) -> None:
        """Extend the lease; raises LostClaim if another scheduler took the period over."""
        now = utcnow(self.clock)
        if not self._end(claim, lease_until=now + self.lease):
            raise LostClaim(f"{claim.job} {claim.period} was taken over by another scheduler")

    def finish(self, claim: Claim, summary: str) -> bool:
        return self._end(claim, "done", summary)

    def fail(self, claim: Claim, summary: str) -> bool:
        """Give the lease up at once, so the next look may retry the period."""
        return self._end(claim, "failed", summary)

    def _end(
        self,
        claim: Claim,
        status: Literal["done", "failed"] | None = None,
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
            result = session.execute(
                update(_RUNS)
                .where(
                    _RUNS.c.job == claim.job,
                    _RUNS.c.period == claim.period,
                    _RUNS.c.owner == claim.owner,
                    _RUNS.c.attempt == claim.attempt,
                    _RUNS.c.status == "running",
                )
                .values(**values)
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
