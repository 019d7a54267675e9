"""Period claims: one run per (job, period) across schedulers, with takeover and retries."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.demo.fake_slack import FakeSlack
from bot.scheduler import REVIEW_JOB, Checkpoint, Periodic, Scheduler, cron
from rbac_core import Database, ManualClock, signals
from rbac_core.store.job_runs import MAX_ATTEMPTS, JobRuns, LostClaim, RunTooLong, retry_delay

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


# -- every claimed period ends: done, or given up with one alert (issue 12, 1.6) -------

P9 = "2026-11-23T09:00Z"
MINUTELY = "* * * * *"
WEEKLY = "0 9 * * mon"
GaveUp = list[tuple[str, str, str]]


def periodic(
    expression: str, grace: timedelta, run: Callable[[datetime, Checkpoint], str] | None = None
) -> Periodic:
    return Periodic("review", cron(expression, "UTC"), grace, run or (lambda p, c: "posted"))


def replica(
    db: Database, clock: ManualClock, owner: str, job: Periodic, gave_up: GaveUp
) -> Scheduler:
    """One scheduler replica; what it gives up is appended to `gave_up` (its alert)."""
    return Scheduler(
        JobRuns(db, clock),
        [job],
        clock=clock,
        owner=owner,
        on_gave_up=lambda *args: gave_up.append(args),
    )


def left_running(db: Database, clock: ManualClock, period: str = P9) -> None:
    """What a scheduler killed with SIGKILL mid-run leaves: its claim, never renewed again."""
    assert JobRuns(db, clock).claim("review", period, "doomed") is not None


def statuses(db: Database, clock: ManualClock, job: str = "review") -> dict[str, str]:
    return {run.period: run.status for run in JobRuns(db, clock).runs(job)}


def at(moment: datetime, minutes: float = 0) -> float:
    return (moment + timedelta(minutes=minutes)).timestamp()


def test_a_run_killed_on_a_minutely_schedule_is_given_up_once_its_lease_lapses(
    db: Database, clock: ManualClock
) -> None:
    """Newer periods ran meanwhile, so the stale one is superseded: one alert, not a rerun."""
    clock.now = at(MONDAY_9, 0.5)
    left_running(db, clock)
    gave_up: GaveUp = []
    job = periodic(MINUTELY, timedelta(hours=1))
    replicas = [replica(db, clock, f"s{i}", job, gave_up) for i in (1, 2)]
    for minute in range(1, 31):
        clock.now = at(MONDAY_9, minute + 0.5)
        for each in replicas:
            each.tick()
        if minute <= 10:  # the lease runs to 09:10:30: nobody touches it before
            assert statuses(db, clock)[P9] == "running" and gave_up == []
    seen = statuses(db, clock)
    assert seen.pop(P9) == "given_up"
    assert set(seen.values()) == {"done"} and len(seen) == 30
    assert [(job, period) for job, period, _ in gave_up] == [("review", P9)]
    assert "superseded by 2026-11-23T09:11Z" in gave_up[0][2]  # the first look after it lapsed


@pytest.mark.parametrize(
    ("expression", "grace_hours", "back_after", "ends", "alerts"),
    [
        (WEEKLY, 24, timedelta(days=3), "given_up", 1),  # past the grace time
        (MINUTELY, 1, timedelta(minutes=45), "given_up", 1),  # superseded by 09:45
        (MINUTELY, 1, timedelta(days=3), "given_up", 1),
        (WEEKLY, 24, timedelta(minutes=30), "done", 0),  # within the grace: taken over
    ],
)
def test_a_replica_started_long_after_the_lease_lapsed_ends_the_stale_claim(
    db: Database,
    clock: ManualClock,
    expression: str,
    grace_hours: int,
    back_after: timedelta,
    ends: str,
    alerts: int,
) -> None:
    clock.now = at(MONDAY_9, 0.5)
    left_running(db, clock)  # and then every replica was down
    gave_up: GaveUp = []
    late = replica(db, clock, "late", periodic(expression, timedelta(hours=grace_hours)), gave_up)
    clock.now = (MONDAY_9 + back_after).timestamp()
    late.tick()
    clock.advance(60)
    late.tick()
    assert statuses(db, clock)[P9] == ends
    assert [period for _, period, _ in gave_up] == [P9] * alerts
    assert set(statuses(db, clock).values()) <= {"done", "given_up"}


def test_a_failed_period_is_given_up_with_one_alert_once_a_newer_period_has_started(
    db: Database, clock: ManualClock
) -> None:
    calls: list[datetime] = []

    def flaky(period: datetime, checkpoint: Checkpoint) -> str:
        calls.append(period)
        if len(calls) == 1:
            raise ConnectionError("Slack unreachable")
        return "posted"

    gave_up: GaveUp = []
    scheduler = replica(db, clock, "s1", periodic(MINUTELY, timedelta(hours=1), flaky), gave_up)
    clock.now = at(MONDAY_9, 0.5)
    assert [r.status for r in scheduler.tick()] == ["failed"]
    for minute in range(1, 21):
        clock.now = at(MONDAY_9, minute + 0.5)
        scheduler.tick()
    seen = statuses(db, clock)
    assert seen.pop(P9) == "given_up"
    assert set(seen.values()) == {"done"}
    assert [(period, "superseded" in why) for _, period, why in gave_up] == [(P9, True)]
    assert calls.count(MONDAY_9) == 1  # a review newer than it ran: no point running it again


def test_a_failed_period_whose_next_retry_falls_past_the_grace_time_is_given_up_with_one_alert(
    db: Database, clock: ManualClock
) -> None:
    def broken(period: datetime, checkpoint: Checkpoint) -> str:
        raise ConnectionError("Slack unreachable")

    gave_up: GaveUp = []
    scheduler = replica(db, clock, "s1", periodic("0 9 * * *", timedelta(hours=1), broken), gave_up)
    failed_at = []
    for minute in range(0, 180):
        clock.now = at(MONDAY_9, minute + 0.5)
        if scheduler.tick():
            failed_at.append(minute)
    # Tries at 09:00, 09:05, 09:15, 09:35; the fifth would start at 10:15, after 10:00.
    assert failed_at == [0, 5, 15, 35]
    row = JobRuns(db, clock).status("review", P9)
    assert row is not None and (row.status, row.attempt) == ("given_up", 4)
    assert [period for _, period, _ in gave_up] == [P9]
    assert "grace" in gave_up[0][2]


def test_a_lease_is_renewed_only_until_the_runs_time_bound(
    runs: JobRuns, clock: ManualClock
) -> None:
    bound = timedelta(minutes=30)
    claim = runs.claim("review", "p1", "s1", max_run=bound)
    assert claim is not None
    start = MONDAY_9
    for _ in range(3):
        clock.advance(9 * 60)
        runs.renew(claim)
        row = runs.status("review", "p1")
        assert row is not None and row.lease_until <= start + bound
    clock.advance(2 * 60)  # 29 minutes in: renewed, but only to the bound
    runs.renew(claim)
    row = runs.status("review", "p1")
    assert row is not None and row.lease_until == start + bound
    assert runs.claim("review", "p1", "s2") is None
    clock.advance(61)
    with pytest.raises(RunTooLong):
        runs.renew(claim)  # a run that checks in after its bound learns it must stop
    second = runs.claim("review", "p1", "s2")
    assert second is not None and second.attempt == 2


def test_a_run_that_never_checks_in_stops_being_renewed_by_its_heartbeat_after_the_bound(
    runs: JobRuns, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.scheduler import Heartbeat

    monkeypatch.setattr(Heartbeat, "EVERY", timedelta(milliseconds=20))
    claim = runs.claim("review", "p1", "s1", max_run=timedelta(minutes=30))
    assert claim is not None
    heartbeat = Heartbeat(runs, claim)  # the run itself hangs: only the heartbeat renews
    try:
        for _ in range(3):
            clock.advance(9 * 60)
            time.sleep(0.2)
            assert runs.claim("review", "p1", "s2") is None
        clock.advance(4 * 60)  # 31 minutes in
        time.sleep(0.2)
        taken = runs.claim("review", "p1", "s2")
        assert taken is not None and taken.attempt == 2
    finally:
        heartbeat.stop()


def test_a_run_that_outlives_its_bound_is_stopped_recorded_as_failed_and_retried(
    db: Database, clock: ManualClock
) -> None:
    """The bound fits the grace: half of it, at most 2 hours, so a retry still fits."""
    steps: list[int] = []

    def slow(period: datetime, checkpoint: Checkpoint) -> str:
        for step in range(60):  # five hours of work, checking in every five minutes
            clock.advance(5 * 60)
            checkpoint()
            steps.append(step)
        return "posted"

    job = periodic(WEEKLY, timedelta(hours=24), slow)
    assert job.max_run == timedelta(hours=2)
    assert periodic(MINUTELY, timedelta(hours=1)).max_run == timedelta(minutes=30)
    gave_up: GaveUp = []
    clock.now = at(MONDAY_9, 0.5)
    ran = replica(db, clock, "s1", job, gave_up).tick()
    assert [r.status for r in ran] == ["failed"]
    assert len(steps) == 23  # stopped at its checkpoint two hours in
    row = JobRuns(db, clock).status("review", P9)
    assert row is not None and (row.status, row.attempt) == ("failed", 1)
    clock.advance(retry_delay(1).total_seconds())
    fast = replica(db, clock, "s2", periodic(WEEKLY, timedelta(hours=24)), gave_up)
    assert [(r.status, r.period) for r in fast.tick()] == [("done", P9)]
    assert gave_up == []


def test_replicas_racing_to_give_up_a_stale_period_alert_exactly_once(
    db_url: str, clock: ManualClock
) -> None:
    """Each replica has its own Database (its own connections), as separate hosts would."""
    setup = Database(db_url)
    clock.now = at(MONDAY_9, 0.5)
    left_running(setup, clock)
    clock.now = at(MONDAY_9, 60 * 30)  # Tuesday 15:00: past the 24-hour grace
    gave_up: GaveUp = []
    job = periodic(WEEKLY, timedelta(hours=24))
    bases = [Database(db_url) for _ in range(4)]
    replicas = [replica(each, clock, f"s{i}", job, gave_up) for i, each in enumerate(bases)]
    try:
        race(replicas)
        assert statuses(setup, clock) == {P9: "given_up"}
        assert [period for _, period, _ in gave_up] == [P9]
    finally:
        for each in (setup, *bases):
            each.dispose()


def test_replicas_racing_to_take_over_a_stale_period_run_it_exactly_once(
    db_url: str, clock: ManualClock
) -> None:
    setup = Database(db_url)
    clock.now = at(MONDAY_9, 0.5)
    left_running(setup, clock)
    clock.now = at(MONDAY_9, 12)  # the lease lapsed, the grace time has not
    calls: list[str] = []
    lock = threading.Lock()

    def once(period: datetime, checkpoint: Checkpoint) -> str:
        with lock:
            calls.append(period.isoformat())
        return "posted"

    gave_up: GaveUp = []
    job = periodic(WEEKLY, timedelta(hours=24), once)
    bases = [Database(db_url) for _ in range(4)]
    replicas = [replica(each, clock, f"s{i}", job, gave_up) for i, each in enumerate(bases)]
    try:
        race(replicas)
        assert calls == [MONDAY_9.isoformat()]
        row = JobRuns(setup, clock).status("review", P9)
        assert row is not None and (row.status, row.attempt) == ("done", 2)
        assert gave_up == []
    finally:
        for each in (setup, *bases):
            each.dispose()


def race(replicas: list[Scheduler]) -> None:
    """One look by each replica, in threads released at the same instant."""
    barrier = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def look(each: Scheduler) -> None:
        try:
            barrier.wait(timeout=30)
            each.tick()
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=look, args=(each,)) for each in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def test_every_end_of_a_run_is_signalled_for_metrics(db: Database, clock: ManualClock) -> None:
    ended: list[tuple[str, str]] = []

    def listen(job: str, result: str) -> None:
        ended.append((job, result))

    signals.job_finished.connect(listen)
    try:
        outcomes = iter([ConnectionError("down"), None])

        def flaky(period: datetime, checkpoint: Checkpoint) -> str:
            error = next(outcomes, None)
            if error is not None:
                raise error
            return "posted"

        gave_up: GaveUp = []
        clock.now = at(MONDAY_9 - timedelta(weeks=1), 0.5)
        left_running(db, clock, "2026-11-16T09:00Z")  # last week's, killed and forgotten
        clock.now = at(MONDAY_9, 0.5)
        scheduler = replica(db, clock, "s1", periodic(WEEKLY, timedelta(hours=24), flaky), gave_up)
        scheduler.tick()
        clock.advance(retry_delay(1).total_seconds())
        scheduler.tick()
        assert sorted(ended) == [("review", "done"), ("review", "failed"), ("review", "given_up")]
        assert [period for _, period, _ in gave_up] == ["2026-11-16T09:00Z"]
    finally:
        signals.job_finished.disconnect(listen)


def test_the_last_failed_attempt_is_signalled_as_given_up(db: Database, clock: ManualClock) -> None:
    ended: list[str] = []

    def listen(job: str, result: str) -> None:
        ended.append(result)

    signals.job_finished.connect(listen)
    try:

        def broken(period: datetime, checkpoint: Checkpoint) -> str:
            raise ConnectionError("Slack unreachable")

        gave_up: GaveUp = []
        clock.now = at(MONDAY_9, 0.5)
        scheduler = replica(db, clock, "s1", periodic(WEEKLY, timedelta(hours=24), broken), gave_up)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            scheduler.tick()
            clock.advance(retry_delay(attempt).total_seconds())
        scheduler.tick()
        assert ended == ["failed"] * (MAX_ATTEMPTS - 1) + ["given_up"]
        assert statuses(db, clock) == {P9: "given_up"}
        assert len(gave_up) == 1
    finally:
        signals.job_finished.disconnect(listen)


# -- replicas in processes of their own (tests/scheduler_worker.py) --------------------

REPO = Path(__file__).resolve().parent.parent
PARIS_9 = datetime(2026, 12, 28, 8, 0, 30, tzinfo=UTC)  # 09:00:30 in Paris, the worker's zone
AUDIT = "C0WAAUDIT"
ALERTS = "C0WAALERT"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def worker(
    db_url: str, slack: FakeSlack, owner: str, start: datetime, *, looks: int, go_at: float = 0.0
) -> subprocess.Popen[bytes]:
    """A production scheduler on a minutely schedule, looking `looks` minutes from `start`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.scheduler_worker",
            *("--db", db_url, "--slack", slack.url, "--owner", owner),
            *("--periods", "1", "--looks", str(looks), "--go-at", str(go_at)),
            *("--start", start.isoformat(), "--schedule", MINUTELY, "--grace-hours", "1"),
            *("--alert-channel", ALERTS),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def posted_to(slack: FakeSlack, channel: str) -> list[str]:
    return [
        str(c.body.get("text", ""))
        for c in slack.named("chat.postMessage")
        if c.body.get("channel") == channel
    ]


@pytest.mark.slow
def test_replica_processes_end_a_period_whose_scheduler_was_killed_with_one_alert(
    team: dict[str, str], db_url: str, db: Database, clock: ManualClock, slack: FakeSlack
) -> None:
    """The issue's case: `* * * * *`, a replica SIGKILLed mid-run, three replicas racing."""
    slack.hold.add("users.list")  # the first run hangs half way, on its call to Slack
    doomed = worker(db_url, slack, "doomed", PARIS_9, looks=1)
    deadline = time.time() + 60
    while not slack.named("users.list") and time.time() < deadline:
        time.sleep(0.05)
    assert slack.named("users.list"), "the first run never reached Slack"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    slack.hold.clear()
    first = "2026-12-28T08:00Z"
    assert statuses(db, clock, REVIEW_JOB) == {first: "running"}

    go_at = time.time() + 3.0  # all three are up by then, and race from the same instant
    later = PARIS_9 + timedelta(minutes=12)  # its lease lapsed two minutes ago
    procs = [worker(db_url, slack, f"replica-{i}", later, looks=3, go_at=go_at) for i in range(3)]
    for proc in procs:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output.decode()[-3000:]
    assert statuses(db, clock, REVIEW_JOB) == {
        first: "given_up",
        "2026-12-28T08:12Z": "done",
        "2026-12-28T08:13Z": "done",
        "2026-12-28T08:14Z": "done",
    }
    [alert] = posted_to(slack, ALERTS)
    assert first in alert and "superseded" in alert
    assert len(posted_to(slack, AUDIT)) == 3  # one report for each period that ran
