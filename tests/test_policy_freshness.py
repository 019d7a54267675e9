"""A decision is fresh: a change committed by any process counts from the very next decision.

A gate learns that policy has not moved from a counter the processes of the machine
share (rbac_core/store/stamp.py) instead of a transaction, and on PostgreSQL from a
LISTEN for other machines' changes (listened_stamp.py); these tests hold it to the
promise a transaction kept, across real processes, and bound what it cannot see.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from rbac_core import Database, Gate, build_gate
from rbac_core.clock import utcnow
from rbac_core.store.listened_stamp import APPLICATION, STAMP_DIR_ENV, ListenedStamp
from rbac_core.store.models import Grant
from rbac_core.store.stamp import TRUST_S, Stamp, stamp_path

from .conftest import ADMIN, ALICE
from .helpers import live_grants, run

JOIN_S = 60
NUMBER = "+15550001111"


def listening(db: Database) -> None:
    """Wait until the database's policy stamp can tell (PostgreSQL's listener is up)."""
    deadline = time.monotonic() + JOIN_S
    while db.policy_stamp.read() is None:
        assert time.monotonic() < deadline, "the policy stamp never became readable"
        time.sleep(0.01)


def _decider(url: str, conn: Connection, stamp_dir: str | None = None) -> None:
    """Another process: a gate of its own, deciding on demand; it answers whether the
    decision allowed, and how many transactions it opened to decide. With `stamp_dir`
    it keeps its stamps elsewhere, as a process on another machine would."""
    if stamp_dir is not None:
        os.environ[STAMP_DIR_ENV] = stamp_dir
    db = Database(url)
    listening(db)
    gate = build_gate(db)
    gate.policies.trust_clock = lambda: 0.0  # trust never runs out: only the stamp can tell
    opened = [0]
    real = db.transaction

    def counting(**kwargs: Any) -> Any:
        opened[0] += 1
        return real(**kwargs)

    db.transaction = counting  # type: ignore[method-assign]
    try:
        while (asked := conn.recv()) is not None:
            before = opened[0]
            conn.send((gate.decide(*asked).allowed, opened[0] - before))
    finally:
        db.dispose()


def _another_process(db_url: str, stamp_dir: str | None = None) -> Iterator[Connection]:
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    process = ctx.Process(target=_decider, args=(db_url, theirs, stamp_dir), daemon=True)
    process.start()
    yield mine
    mine.send(None)
    process.join(JOIN_S)
    assert process.exitcode == 0


@pytest.fixture
def elsewhere(db_url: str) -> Iterator[Connection]:
    yield from _another_process(db_url)


@pytest.fixture
def on_another_machine(db_url: str, tmp_path: Path) -> Iterator[Connection]:
    """A process that shares no stamp file with this one: only PostgreSQL can tell it."""
    if db_url.startswith("sqlite"):
        pytest.skip("a SQLite database is only ever used from one machine")
    (tmp_path / "elsewhere").mkdir(mode=0o700)  # its own WA_STAMP_DIR
    yield from _another_process(db_url, str(tmp_path / "elsewhere"))


def decide_there(conn: Connection, *asked: str) -> tuple[bool, int]:
    """(allowed, transactions the other process opened to decide)."""
    conn.send(asked)
    assert conn.poll(JOIN_S), "the other process did not answer"
    allowed, opened = conn.recv()
    return bool(allowed), int(opened)


def test_a_grant_revoked_here_is_refused_by_the_next_decision_in_another_process(
    db: Database, gate: Gate, team: dict[str, str], elsewhere: Connection
) -> None:
    warm = 0  # while the stamp stands still: no transaction
    assert decide_there(elsewhere, ALICE, "messages:send_text") == (False, 1)
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert decide_there(elsewhere, ALICE, "messages:send_text", NUMBER) == (True, 1)
    for _ in range(3):  # from its snapshot: the stamp has not moved
        assert decide_there(elsewhere, ALICE, "messages:send_text", NUMBER) == (True, warm)
    assert run(gate, ADMIN, "role.revoke", user=ALICE, role="agent").ok
    assert decide_there(elsewhere, ALICE, "messages:send_text", NUMBER) == (False, 1)
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert decide_there(elsewhere, ALICE, "messages:send_text") == (True, 1)


def test_while_policy_stands_still_a_decision_opens_no_transaction(
    db: Database, gate: Gate, team: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    listening(db)
    gate.policies.trust_clock = lambda: 0.0
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert gate.decide(ALICE, "messages:send_text").allowed
    opened: list[bool] = []
    real = db.transaction

    def counting(**kwargs: Any) -> Any:
        opened.append(kwargs["write"])
        return real(**kwargs)

    monkeypatch.setattr(db, "transaction", counting)
    assert gate.decide(ALICE, "messages:send_text", "+1 555 000 1111").allowed
    assert not gate.decide(ALICE, "templates:approve").allowed
    assert opened == []


def test_a_change_the_stamp_missed_counts_within_its_trust_period(
    db: Database, gate: Gate, team: dict[str, str]
) -> None:
    """A writer killed between its commit and its bump, or SQL typed by hand: the
    snapshot is read again once it is TRUST_S old."""
    listening(db)
    now = [0.0]
    gate.policies.trust_clock = lambda: now[0]
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert gate.decide(ALICE, "messages:send_text").allowed
    with db.engine.begin() as conn:  # by hand: no gate, no stamp
        conn.execute(update(Grant).where(Grant.user_id == ALICE).values(revoked_at=utcnow()))
        conn.execute(text("UPDATE policy_state SET version = version + 1"))
    now[0] = TRUST_S * 0.9
    assert gate.decide(ALICE, "messages:send_text").allowed  # not seen yet
    now[0] = TRUST_S
    assert not gate.decide(ALICE, "messages:send_text").allowed


def test_every_spelling_of_one_database_shares_one_stamp(tmp_path: Path) -> None:
    real = tmp_path / "data" / "wa.db"
    real.parent.mkdir()
    (tmp_path / "link.db").symlink_to(real)
    expected = str(real.resolve()) + ".policy-stamp"
    for spelling in (
        str(real),
        str(tmp_path / "link.db"),
        f"file:{real}?uri=true",
        f"file:{tmp_path / 'data' / '..' / 'data' / 'wa.db'}",
    ):
        assert stamp_path(spelling) == expected, spelling
    assert stamp_path("") is None and stamp_path(":memory:") is None
    assert stamp_path("file:shared?mode=memory&cache=shared") is None


def test_a_change_through_a_symlinked_path_is_seen_through_the_real_one(
    db_url: str, tmp_path: Path, gate: Gate, team: dict[str, str]
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("a SQLite file's spellings")
    link = tmp_path / "spelled-otherwise.db"
    link.symlink_to(db_url.removeprefix("sqlite:///"))
    other_db = Database(f"sqlite:///{link}")
    try:
        reader = build_gate(other_db)
        reader.policies.trust_clock = lambda: 0.0
        assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
        assert reader.decide(ALICE, "messages:send_text").allowed
        assert run(gate, ADMIN, "role.revoke", user=ALICE, role="agent").ok
        assert not reader.decide(ALICE, "messages:send_text").allowed
    finally:
        other_db.dispose()


def test_a_policy_change_that_cannot_be_announced_is_not_made(
    db: Database, gate: Gate, team: dict[str, str]
) -> None:
    """Changing policy unannounced would leave other processes deciding on the old one."""
    stamp = db.policy_stamp
    if not isinstance(stamp, Stamp):
        pytest.skip("a SQLite file's stamp; PostgreSQL's is the test below")
    Path(stamp.path).unlink()
    Path(stamp.path).mkdir()  # cannot be opened as a file any more
    stamp.close()
    outcome = run(gate, ADMIN, "role.assign", user=ALICE, role="agent")
    assert (outcome.ok, outcome.error_code) == (False, "policy_stamp_unavailable")
    assert "policy stamp" in outcome.message
    assert live_grants(db, ALICE) == []
    Path(stamp.path).rmdir()
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok


def test_a_stamp_directory_others_may_write_in_refuses_changes_on_postgresql(
    db_url: str, team: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever may write the counter may set it back and hide a change from this machine."""
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's stamps live in WA_STAMP_DIR")
    shared = tmp_path / "stamps"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(STAMP_DIR_ENV, str(shared))
    other = Database(db_url)
    try:
        gate = build_gate(other)
        with pytest.raises(OSError, match="only it may write"):
            other.policy_stamp.check()  # what `wa-access serve` refuses to start on
        assert other.policy_stamp.read() is None  # cannot tell: every decision reads
        outcome = run(gate, ADMIN, "role.assign", user=ALICE, role="agent")
        assert (outcome.ok, outcome.error_code) == (False, "policy_stamp_unavailable")
        assert live_grants(other, ALICE) == []
        shared.chmod(0o700)
        assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    finally:
        other.dispose()


def test_a_copy_of_a_stamp_file_is_another_stamp(tmp_path: Path) -> None:
    """A cloned machine or a restored backup must not pass for this machine: its
    notifications would be ignored as ones this machine had seen already."""
    original = Stamp(str(tmp_path / "a.stamp"))
    name = original.origin()
    assert name == Stamp(original.path).origin()  # every process sharing the file agrees
    shutil.copy(original.path, tmp_path / "copy.stamp")
    assert Stamp(str(tmp_path / "copy.stamp")).origin() != name


def test_every_spelling_of_a_postgresql_database_shares_one_stamp(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL URLs")
    spellings = [db_url, db_url.replace("127.0.0.1", "localhost", 1)]
    assert spellings[0] != spellings[1], "the test database is not on 127.0.0.1"
    paths = set()
    for url in spellings:
        spelled = Database(url)
        try:
            stamp = spelled.policy_stamp
            assert isinstance(stamp, ListenedStamp)
            stamp.ensure()
            paths.add(stamp.path)
        finally:
            spelled.dispose()
    assert len(paths) == 1 and None not in paths


def test_a_process_on_another_machine_hears_of_a_revocation_from_postgresql(
    db: Database, gate: Gate, team: dict[str, str], on_another_machine: Connection
) -> None:
    """No shared stamp and a trust that never runs out: only NOTIFY can tell it."""
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert decide_there(on_another_machine, ALICE, "messages:send_text") == (True, 1)
    assert decide_there(on_another_machine, ALICE, "messages:send_text") == (True, 0)
    assert run(gate, ADMIN, "role.revoke", user=ALICE, role="agent").ok
    deadline = time.monotonic() + 5.0
    while decide_there(on_another_machine, ALICE, "messages:send_text")[0]:
        assert time.monotonic() < deadline, "the other machine never heard of the revocation"
        time.sleep(0.001)


def _listening_backends(db: Database) -> list[int]:
    with db.engine.connect() as conn:
        found = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": APPLICATION},
        )
        return [int(pid) for (pid,) in found]


def test_what_was_said_while_the_listener_was_away_is_not_trusted(
    db: Database, gate: Gate, team: dict[str, str]
) -> None:
    """Notifications sent while the listening connection is down are lost: coming back
    counts as hearing a change, and meanwhile every decision reads the version."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's listener")
    stamp = db.policy_stamp
    assert isinstance(stamp, ListenedStamp)
    listening(db)
    gate.policies.trust_clock = lambda: 0.0
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    assert gate.decide(ALICE, "messages:send_text").allowed
    with db.engine.begin() as conn:  # the listener's connection goes away...
        for pid in _listening_backends(db):
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    deadline = time.monotonic() + JOIN_S
    while stamp.read() is not None:
        assert time.monotonic() < deadline, "the listener never noticed"
        time.sleep(0.001)
    with db.engine.begin() as conn:  # ...and a change is made that nobody hears of
        conn.execute(update(Grant).where(Grant.user_id == ALICE).values(revoked_at=utcnow()))
        conn.execute(text("UPDATE policy_state SET version = version + 1"))
    assert not gate.decide(ALICE, "messages:send_text").allowed  # meanwhile: read
    listening(db)  # back: reconnecting moved the stamp, the old snapshot is not trusted
    assert not gate.decide(ALICE, "messages:send_text").allowed


def _bump(path: str, times: int, start: Any) -> None:
    stamp = Stamp(path)
    start.wait(JOIN_S)  # all at once: bumps that never overlap prove nothing
    for _ in range(times):
        stamp.bump()
    stamp.close()


def test_bumps_from_several_processes_are_never_lost(tmp_path: Path) -> None:
    """Two bumps from the same value would leave one change unseen by a reader between."""
    path = str(tmp_path / "db.policy-stamp")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    workers = [ctx.Process(target=_bump, args=(path, 3000, start)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_S)
        assert worker.exitcode == 0
    assert Stamp(path).read() == 9000


def test_a_process_forked_after_a_change_does_not_trust_its_parents_old_snapshot(
    db: Database, gate: Gate, team: dict[str, str]
) -> None:
    """The child's listener is new: were its count to start where the parent's did, the
    child's first stamp could equal the one the parent trusted before hearing a change."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's listener (a SQLite child shares its parent's stamp file)")
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="agent").ok
    listening(db)
    gate.policies.trust_clock = lambda: 0.0
    assert gate.decide(ALICE, "messages:send_text").allowed  # read, then trusted
    stamp = db.policy_stamp
    assert isinstance(stamp, ListenedStamp)
    before = stamp.read()
    with db.engine.begin() as conn:  # another machine revokes: only its NOTIFY tells us
        conn.execute(update(Grant).where(Grant.user_id == ALICE).values(revoked_at=utcnow()))
        conn.execute(text("UPDATE policy_state SET version = version + 1"))
        conn.execute(text("SELECT pg_notify('wa_access_policy', 'another-machine')"))
    deadline = time.monotonic() + JOIN_S
    while stamp.read() == before:
        assert time.monotonic() < deadline, "the notification never came"
        time.sleep(0.001)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 if it refused, 1 if it allowed
        allowed = True
        try:
            db.engine.dispose(close=False)
            listening(db)
            allowed = gate.decide(ALICE, "messages:send_text").allowed
        finally:
            os._exit(1 if allowed else 0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child decided on its parent's old policy"
    assert not gate.decide(ALICE, "messages:send_text").allowed
