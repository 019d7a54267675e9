"""Period claims: one run per (job, period) across schedulers, with takeover and retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.scheduler import Periodic, Scheduler, cron
from rbac_core import Database, ManualClock
from rbac_core.job_runs import MAX_ATTEMPTS, JobRuns, LostClaim, retry_delay

MONDAY_9 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def runs(db: Database, clock: ManualClock) -> JobRuns:
    clock.now = MONDAY_9.timestamp()
    return JobRuns(db, clock)


def test_of_several_claimants_exactly_one_gets_the_period(runs: JobRuns) -> None:
    claims = [runs.claim("review", "2026-11-23T09:00Z", f"s{i}") for i in range(3)]
    assert [c is not None for c in claims] == [True, False, False]


def test_a_finished_period_is_never_claimed_again(runs: JobRuns, clock: ManualClock) -> None:
    claim = runs.claim("review", "p1", "s1")
    assert claim is not None and runs.finish(claim, "posted")
    clock.advance(3600)
    assert runs.claim("review", "p1", "s2") is None


def test_a_live_lease_keeps_others_out_and_a_lapsed_one_is_taken_over(
    runs: JobRuns, clock: ManualClock
) -> None:
    first = runs.claim("review", "p1", "s1")
    assert first is not None
    clock.advance(9 * 60)
    assert runs.claim("review", "p1", "s2") is None
    runs.renew(first)  # still working: the lease runs 10 minutes from now
    clock.advance(9 * 60)
    assert runs.claim("review", "p1", "s2") is None
    clock.advance(2 * 60)
    second = runs.claim("review", "p1", "s2")
    assert second is not None and second.attempt == 2


def test_a_run_whose_period_was_taken_over_learns_it_at_its_next_checkpoint(
    runs: JobRuns, clock: ManualClock
) -> None:
    first = runs.claim("review", "p1", "s1")
    assert first is not None
    clock.advance(11 * 60)
    assert runs.claim("review", "p1", "s2") is not None
    with pytest.raises(LostClaim):
        runs.renew(first)
    assert not runs.finish(first, "late")  # and its result does not count


def test_a_failed_run_is_retried_later_and_later_but_not_forever(
    runs: JobRuns, clock: ManualClock
) -> None:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claim = runs.claim("review", "p1", f"s{attempt}")
        assert claim is not None and claim.attempt == attempt
        assert runs.fail(claim, "Slack was down")
        wait = retry_delay(attempt).total_seconds()
        clock.advance(wait - 1)
        assert runs.claim("review", "p1", "too-soon") is None
        clock.advance(1)
    assert runs.claim("review", "p1", "again") is None
    row = runs.status("review", "p1")
    assert row is not None and (row.status, row.attempt) == ("failed", MAX_ATTEMPTS)
    assert [retry_delay(n).total_seconds() // 60 for n in (1, 2, 3, 4)] == [5, 10, 20, 40]


def test_a_job_that_raises_is_recorded_as_failed_and_retried_after_a_delay(
    db: Database, clock: ManualClock
) -> None:
    clock.now = MONDAY_9.timestamp() + 30
    calls: list[str] = []

    def flaky(period: datetime, checkpoint: object) -> str:
        calls.append(period.isoformat())
        if len(calls) == 1:
            raise ConnectionError("Slack unreachable")
        return "posted"

    job = Periodic("review", cron("0 9 * * mon", "UTC"), timedelta(hours=1), flaky)
    scheduler = Scheduler(JobRuns(db, clock), [job], clock=clock, owner="s1")
    assert [r.status for r in scheduler.tick()] == ["failed"]
    clock.advance(60)
    assert scheduler.tick() == []  # too soon to try again
    clock.advance(4 * 60)
    assert [r.status for r in scheduler.tick()] == ["done"]
    clock.advance(60)
    assert scheduler.tick() == []
    assert calls == [MONDAY_9.isoformat()] * 2


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (datetime(2026, 11, 23, 8, 59, tzinfo=UTC), None),  # last week's is past the grace
        (datetime(2026, 11, 23, 9, 0, tzinfo=UTC), MONDAY_9),
        (datetime(2026, 11, 24, 8, 59, tzinfo=UTC), MONDAY_9),  # back within 24 hours
        (datetime(2026, 11, 24, 9, 1, tzinfo=UTC), None),
    ],
)
def test_the_due_period_is_the_latest_scheduled_moment_within_the_grace_time(
    now: datetime, due: datetime | None
) -> None:
    job = Periodic("review", cron("0 9 * * mon", "UTC"), timedelta(hours=24), lambda p, c: "")
    assert job.due(now) == due


def test_a_malformed_schedule_is_refused_at_start_up() -> None:
    from bot.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="WA_AUDIT_SCHEDULE is malformed"):
        load_settings({"WA_AUDIT_SCHEDULE": "every monday"}, dotenv=None)
    with pytest.raises(ConfigError, match="WA_AUDIT_INACTIVE_DAYS is malformed"):
        load_settings({"WA_AUDIT_INACTIVE_DAYS": "-3"}, dotenv=None)
    with pytest.raises(ConfigError, match="WA_AUDIT_GRACE_HOURS is malformed"):
        load_settings({"WA_AUDIT_GRACE_HOURS": "0"}, dotenv=None)  # no look would be in time


def test_the_last_failed_attempt_is_reported(db: Database, clock: ManualClock) -> None:
    clock.now = MONDAY_9.timestamp() + 30
    gave_up: list[tuple[str, str, str]] = []

    def broken(period: datetime, checkpoint: object) -> str:
        raise ConnectionError("Slack unreachable")

    job = Periodic("review", cron("0 9 * * mon", "UTC"), timedelta(hours=24), broken)
    scheduler = Scheduler(
        JobRuns(db, clock),
        [job],
        clock=clock,
        owner="s1",
        on_gave_up=lambda *args: gave_up.append(args),
    )
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert [r.status for r in scheduler.tick()] == ["failed"]
        assert len(gave_up) == (1 if attempt == MAX_ATTEMPTS else 0)
        clock.advance(retry_delay(attempt).total_seconds())
    assert gave_up == [("review", "2026-11-23T09:00Z", "failed: ConnectionError")]
    assert scheduler.tick() == []


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 * * * *", "*/30 * * * *"])
def test_looks_in_the_hour_a_clock_change_repeats_end_and_find_the_right_period(
    expression: str,
) -> None:
    """Berlin leaves summer time on 25 October 2026: 02:00-03:00 local happens twice."""
    job = Periodic("review", cron(expression, "Europe/Berlin"), timedelta(hours=3), lambda p, c: "")
    for minute in range(0, 181, 7):
        now = datetime(2026, 10, 24, 23, 0, tzinfo=UTC) + timedelta(minutes=minute)
        due = job.due(now)  # returns at all: this used to loop forever
        if due is None:
            assert expression == "30 2 * * *"  # a daily job is not due all day long
            continue
        assert due <= now and now - due <= timedelta(hours=3)
    second = datetime(2026, 10, 25, 1, 31, tzinfo=UTC)  # 02:31 in Berlin, the second time
    assert job.due(second) is not None


def test_the_heartbeat_keeps_a_long_step_from_losing_its_claim(
    runs: JobRuns, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from bot.scheduler import Heartbeat

    monkeypatch.setattr(Heartbeat, "EVERY", timedelta(milliseconds=20))
    claim = runs.claim("review", "p1", "s1")
    assert claim is not None
    heartbeat = Heartbeat(runs, claim)
    try:
        for _ in range(3):  # half an hour of one long step, with no checkpoint in it
            clock.advance(9 * 60)
            time.sleep(0.2)  # the heartbeat renews meanwhile
            assert runs.claim("review", "p1", "s2") is None
        heartbeat.checkpoint()  # still ours
    finally:
        heartbeat.stop()
    clock.advance(11 * 60)
    assert runs.claim("review", "p1", "s2") is not None  # stopped beating: taken over
