"""Signed checkpoints and the keyed chain: a database writer cannot quietly rewrite the log.

Issue 12 §2: with only the database, one could cut the tail and move the head,
edit an entry and re-hash everything after it, reset the log to genesis,
append a forged entry, or put back an older copy, and `audit verify` still
exited 0. Each case below takes a checkpoint first, rewrites with raw SQL,
and expects `audit verify --checkpoint` to exit 1 and say what is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.cli import main
from bot.demo.fake_slack import FakeSlack
from handlers.scheduled.checkpoints import (
    CheckpointFailed,
    hourly_audit_checkpoint,
    make_checkpoint_if_new,
    take_checkpoint,
)
from rbac_core import Database, Gate, ManualClock, build_gate
from rbac_core.audit import GENESIS_HASH, ChainKeyMissing, entry_hash, verify
from rbac_core.audit.checkpoints import Checkpoint, check, parse, sign
from rbac_core.audit.keys import PublicKey, Signer, chain_key, keyed_hasher
from rbac_core.clock import utcnow

from .conftest import ADMIN, Cli
from .helpers import audit_count, audit_rows
from .test_gate import _everything_but_the_audit_log

KEY = "the-deployment's-WA_SECRET_KEY-0123456789"
OTHER_KEY = "somebody-else's-secret-key-9876543210abcdef"


@pytest.fixture
def cli(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The shared in-process `wa-access`, with this deployment's WA_SECRET_KEY."""
    for name in ("WA_AUDIT_CHECKPOINT_FILE", "SLACK_BOT_TOKEN", "WA_AUDIT_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WA_SECRET_KEY", KEY)
    return cli


@pytest.fixture
def keyed(db: Database, clock: ManualClock) -> Gate:
    """The production gate: WA_SECRET_KEY keys the chain and signs checkpoints."""
    return build_gate(db, clock=clock, secret_key=KEY)


def _activity(gate: Gate, count: int) -> None:
    for _ in range(count):
        assert gate.submit(ADMIN, "cli", "role.show", {"user": ADMIN}).ok


@pytest.fixture
def ten(keyed: Gate, db: Database) -> Database:
    """A keyed log of 10 entries: the first admin, then nine lookups."""
    assert keyed.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN}).ok
    _activity(keyed, 9)
    return db


def _checkpoint(cli: Cli) -> str:
    code, out, err = cli("audit", "checkpoint")
    assert code == 0, err
    return out.strip()


def _sql(db: Database, statements: str, params: dict[str, Any] | None = None) -> None:
    with db.write() as session:
        for statement in statements.split(";"):
            session.execute(text(statement), params or {})


def _head(db: Database) -> tuple[int, str]:
    with db.read() as session:
        seq, digest = session.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
    return int(seq), str(digest)


# -- the rewrites, each as a database writer without WA_SECRET_KEY would do it --------------


def truncate_and_move_head(db: Database) -> None:
    _sql(
        db,
        "DELETE FROM audit_log WHERE seq > 6; "
        "UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit_log WHERE seq = 6) "
        "WHERE id = 1",
    )


def edit_and_rehash(db: Database) -> None:
    """Entry 4 now says someone else did it; it and every later hash recomputed, head moved."""
    rows = audit_rows(db)
    prev = rows[2].hash
    with db.write() as session:
        for row in rows[3:]:
            actor = "U0MALLORY" if row.seq == 4 else row.actor
            fields = (row.surface, row.action, row.target, row.decision, row.outcome, row.details)
            digest = entry_hash(row.seq, row.ts_us, actor, *fields, prev)
            session.execute(
                text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"a": actor, "p": prev, "h": digest, "s": row.seq},
            )
            prev = digest
        session.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})


def reset_to_genesis(db: Database) -> None:
    _sql(
        db,
        "DELETE FROM audit_log; UPDATE audit_head SET seq = 0, hash = :g WHERE id = 1",
        {"g": GENESIS_HASH},
    )


def append_forged(db: Database) -> None:
    """A made-up admin grant, hashed exactly as the chain's algorithm says, head moved to it."""
    seq, prev = _head(db)
    ts_us = audit_rows(db)[-1].ts_us + 1
    fields = (ADMIN, "slack", "role.assign", "user:U0MALLORY", "allow", "done")
    details = '{"params":{"role":"admin","user":"U0MALLORY"}}'
    names = ("actor", "surface", "action", "target", "decision", "outcome")
    row: dict[str, Any] = {"seq": seq + 1, "ts_us": ts_us, **dict(zip(names, fields, strict=True))}
    row |= {"details": details, "prev_hash": prev}
    row["hash"] = entry_hash(seq + 1, ts_us, *fields, details, prev)
    _sql(
        db,
        "INSERT INTO audit_log (seq, ts_us, actor, surface, action, target, decision, outcome, "
        "details, prev_hash, hash) VALUES (:seq, :ts_us, :actor, :surface, :action, :target, "
        ":decision, :outcome, :details, :prev_hash, :hash); "
        "UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1",
        row,
    )


REWRITES = {
    # rewrite: (what verify says, exit code of `audit verify` without a checkpoint)
    "truncated, head moved": (truncate_and_move_head, "the log's head is entry 6, behind", 0),
    "edited and re-hashed": (edit_and_rehash, "the log up to entry 10 was rewritten", 1),
    "reset to genesis": (reset_to_genesis, "the log's head is entry 0, behind", 0),
    "forged entry appended": (append_forged, "entry 12 is not keyed like the entries before", 1),
}


@pytest.mark.parametrize("case", sorted(REWRITES))
def test_each_rewrite_fails_verification_against_an_earlier_checkpoint(
    case: str, ten: Database, cli: Cli
) -> None:
    rewrite, says, plain_code = REWRITES[case]
    line = _checkpoint(cli)
    assert parse(line).seq == 10  # the head before the checkpoint's own entry
    assert cli("audit", "verify", "--checkpoint", line)[0] == 0
    rewrite(ten)
    code, _, err = cli("audit", "verify", "--checkpoint", line)
    assert code == 1 and says in err, err
    assert err.startswith("audit log TAMPERED:") and "Traceback" not in err
    # Cutting and resetting leave a chain that checks out on its own: only the
    # checkpoint tells. Edits and forgeries are caught by the key even without it.
    assert cli("audit", "verify")[0] == plain_code


@pytest.fixture
def restore(ten: Database, db_url: str, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Copy the database now; calling the result puts that copy back.

    On SQLite the file is copied (with SQLite's backup API, which is consistent
    while connections are open). On PostgreSQL a restore is simulated by what
    it amounts to: the later entries gone and the head back where it was.
    """
    db = ten
    if db.engine.dialect.name == "sqlite":
        live = str(make_url(db_url).database)
        copy = str(tmp_path / "backup.db")
        _sqlite_copy(live, copy)

        def put_back() -> None:
            db.dispose()
            _sqlite_copy(copy, live)
    else:
        seq, digest = _head(db)

        def put_back() -> None:
            _sql(
                db,
                "DELETE FROM audit_log WHERE seq > :s; "
                "UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1",
                {"s": seq, "h": digest},
            )

    yield put_back


def _sqlite_copy(source: str, target: str) -> None:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def test_a_restored_older_copy_of_the_database_fails_verification(
    ten: Database, keyed: Gate, cli: Cli, restore: Callable[[], None]
) -> None:
    _activity(keyed, 3)  # after the backup: entries 11 to 13
    line = _checkpoint(cli)
    restore()
    assert _head(ten)[0] == 10 and cli("audit", "verify")[0] == 0  # a consistent old log
    code, _, err = cli("audit", "verify", "--checkpoint", line)
    assert code == 1 and "head is entry 10, behind the checkpoint of entry 13" in err
    assert "older copy of the database was restored" in err


def test_an_intact_log_holds_its_checkpoints_as_it_grows(
    ten: Database, keyed: Gate, cli: Cli
) -> None:
    first = _checkpoint(cli)
    _activity(keyed, 5)
    second = _checkpoint(cli)
    for line in (first, second, f"  `{second}`  "):  # pasted from Slack with its backticks
        code, out, _ = cli("audit", "verify", "--checkpoint", line)
        assert code == 0 and "audit log intact: 17 entries" in out
    assert f"holds the checkpoint of entry {parse(second).seq}" in out


def test_a_checkpoint_signed_with_another_key_is_refused(ten: Database, cli: Cli) -> None:
    seq, digest = _head(ten)
    foreign = sign(Signer.from_secret(OTHER_KEY), seq, digest, datetime.now().astimezone())
    code, _, err = cli("audit", "verify", "--checkpoint", foreign.line)
    ours = Signer.from_secret(KEY).public.key_id
    assert code == 1
    assert err.strip() == (
        f"checkpoint refused: the checkpoint was signed by key {foreign.key_id}, not by the "
        f"expected key {ours}: refused"
    )
    # Claiming our key id does not help: the signature is still another key's.
    claimed = replace(foreign, key_id=ours)
    code, _, err = cli("audit", "verify", "--checkpoint", claimed.line)
    assert code == 1 and "signature does not verify" in err
    # Nor does editing a genuine line to point at another state of the log.
    genuine = parse(_checkpoint(cli))
    edited = replace(genuine, hash="f" * 64)
    code, _, err = cli("audit", "verify", "--checkpoint", edited.line)
    assert code == 1 and "the line was altered or forged" in err


def test_an_auditor_pins_the_public_key_so_a_swapped_server_key_cannot_sign(
    ten: Database, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, pinned, _ = cli("audit", "public-key")
    assert code == 0 and PublicKey.parse(pinned) == Signer.from_secret(KEY).public
    line = _checkpoint(cli)
    assert cli("audit", "verify", "--checkpoint", line, "--public-key", pinned.strip())[0] == 0
    monkeypatch.setenv("WA_SECRET_KEY", OTHER_KEY)  # someone replaced the server's key
    swapped = _checkpoint(cli)
    code, _, err = cli("audit", "verify", "--checkpoint", swapped, "--public-key", pinned.strip())
    assert code == 1 and "not by the expected key" in err


def _other_spelling_of_the_signature(line: str) -> str:
    """The same signature bytes, but the base64 digit before `==` with other padding bits."""
    body, sig = line.rsplit("sig=", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3])
    sibling = alphabet[(last & ~0b1111) | ((last + 1) & 0b1111)]
    assert base64.b64decode(sig) == base64.b64decode(sig[:-3] + sibling + "==")
    return f"{body}sig={sig[:-3]}{sibling}=="


@pytest.mark.parametrize(
    ("mangle", "says"),
    [
        (lambda line: "hello", "notes.txt, line 2: not a wa-access checkpoint line"),
        (lambda line: line[:-12], "not a wa-access checkpoint line"),
        (lambda line: line.replace(" v1 ", " v2 "), "version v2 is not supported"),
        (lambda line: line.replace("seq=", "seq=x"), "not a wa-access checkpoint line"),
        (_other_spelling_of_the_signature, "not a wa-access checkpoint line"),
        (lambda line: line.replace("seq=", "seq=٢"), "not a wa-access checkpoint line"),
    ],
)
def test_a_malformed_checkpoint_is_refused_in_one_line(
    ten: Database, cli: Cli, mangle: Callable[[str], str], says: str
) -> None:
    genuine = _checkpoint(cli)
    line = mangle(genuine)
    source = line
    if not line.startswith("wa-access"):  # a damaged line in a file of checkpoints
        source = "notes.txt"
        Path(source).write_text(f"{genuine}\n{line}\n", encoding="utf-8")
    code, _, err = cli("audit", "verify", "--checkpoint", source)
    assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("checkpoint refused: ")


def test_usage_errors_and_a_missing_key_exit_2(ten: Database, cli: Cli, monkeypatch: Any) -> None:
    line = _checkpoint(cli)
    code, _, err = cli("audit", "verify", "--checkpoint", line, "--public-key", "nonsense")
    assert code == 2 and "not an audit public key" in err
    assert cli("audit", "verify", "--public-key", "nonsense")[0] == 2
    monkeypatch.delenv("WA_SECRET_KEY")
    for command in (("audit", "checkpoint"), ("audit", "public-key")):
        code, _, err = cli(*command)
        assert code == 2 and err.strip() == "WA_SECRET_KEY is required but not set"
    code, _, err = cli("audit", "verify")  # a keyed log cannot be checked without the key
    assert code == 1 and "WA_SECRET_KEY is not set here" in err


def test_checkpoints_go_to_the_file_and_channel_and_verify_uses_the_newest(
    ten: Database, keyed: Gate, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence" / "checkpoints.log"
    evidence.parent.mkdir()
    monkeypatch.setenv("WA_AUDIT_CHECKPOINT_FILE", str(evidence))
    code, _, err = cli("audit", "verify")
    assert code == 0 and "no checkpoint yet" in err
    code, first, err = cli("audit", "checkpoint")
    assert code == 0 and "not posted to Slack: SLACK_BOT_TOKEN and WA_AUDIT_CHANNEL" in err
    _activity(keyed, 2)
    slack = FakeSlack().start()
    try:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
        monkeypatch.setenv("SLACK_API_URL", slack.url)
        monkeypatch.setenv("WA_AUDIT_CHANNEL", "C0WAAUDIT")
        second = _checkpoint(cli)
        posted = slack.named("chat.postMessage")
    finally:
        slack.stop()
    assert [c.body["channel"] for c in posted] == ["C0WAAUDIT"]
    assert second in posted[0].body["text"]
    assert evidence.read_text(encoding="utf-8").splitlines() == [first.strip(), second]
    code, out, _ = cli("audit", "verify")
    assert code == 0 and f"holds the checkpoint of entry {parse(second).seq}" in out
    truncate_and_move_head(ten)  # entry 13 was checkpointed: the newest in the file catches it
    code, _, err = cli("audit", "verify")
    assert code == 1 and "behind the checkpoint of entry 13" in err
    assert cli("audit", "verify", "--checkpoint", str(evidence))[0] == 1


def test_the_checkpoint_is_an_audited_gate_action_for_system_actors_only(
    ten: Database, keyed: Gate, db: Database, clock: ManualClock
) -> None:
    before = _everything_but_the_audit_log(db)
    outcome = keyed.submit("operator", "cli", "audit.checkpoint", {})
    assert _everything_but_the_audit_log(db) == before  # read-only: it runs without a savepoint
    made: Checkpoint = outcome.data["checkpoint"]
    entry = audit_rows(db)[-1]
    assert (entry.seq, entry.action, entry.outcome) == (11, "audit.checkpoint", "done")
    assert entry.prev_hash == made.hash and made.seq == 10  # it signs the entry before its own
    assert made.line in entry.details and f'"seq":{made.seq}' in entry.details
    refused = keyed.submit(ADMIN, "slack", "audit.checkpoint", {})
    assert refused.status == "refused" and "Only the scheduler or an operator" in refused.message
    assert audit_rows(db)[-1].action == "audit.checkpoint"  # the refusal audited
    # A process without the key may not write to a keyed log at all: its entries could
    # never verify. It is refused before anything is written.
    entries = audit_count(db)
    with pytest.raises(ChainKeyMissing, match="WA_SECRET_KEY"):
        build_gate(db, clock=clock).submit("operator", "cli", "audit.checkpoint", {})
    assert audit_count(db) == entries


def test_the_hourly_job_checkpoints_only_an_hour_that_saw_new_entries(
    db: Database, keyed: Gate, tmp_path: Path
) -> None:
    evidence = tmp_path / "checkpoints.log"
    job = hourly_audit_checkpoint(keyed, None, None, str(evidence))
    assert job(utcnow(), lambda: None).startswith("no new audit entries")  # an empty log
    assert audit_count(db) == 0
    assert keyed.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN}).ok
    assert job(utcnow(), lambda: None) == (
        f"checkpoint of entry 1 ({parse(evidence.read_text()).at_text}) sent to {evidence}"
    )
    assert make_checkpoint_if_new(keyed, None, None, str(evidence)).startswith("no new")
    assert audit_count(db) == 2  # the idle hour wrote nothing, not even a refusal
    _activity(keyed, 1)
    assert make_checkpoint_if_new(keyed, None, None, str(evidence)).startswith("checkpoint of")
    assert [parse(x).seq for x in evidence.read_text().splitlines()] == [1, 3]
    _activity(keyed, 1)
    with pytest.raises(CheckpointFailed, match="reached no destination"):
        make_checkpoint_if_new(keyed, None, None, None)


def test_the_chain_is_keyed_and_older_unkeyed_entries_still_verify(
    db: Database, gate: Gate, keyed: Gate
) -> None:
    """Entries from before the key stay valid as a prefix; from the first keyed entry on,
    every entry must be keyed, so nobody can append plain SHA-256 entries after them."""
    assert gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN}).ok
    _activity(gate, 2)  # unkeyed: a log written before WA_SECRET_KEY was set
    _activity(keyed, 3)
    key = chain_key(KEY)
    with db.snapshot() as conn:
        assert verify(conn, key=key).ok
        unkeyed = verify(conn)
    assert not unkeyed.ok and unkeyed.first_bad_seq == 4  # the first keyed entry
    with pytest.raises(ChainKeyMissing):
        _activity(gate, 1)  # a process without the key is refused, not let break the chain
    with db.snapshot() as conn:
        assert verify(conn, key=key).ok
    # A plain entry slipped in behind the gate's back (a database writer) is caught.
    _append_plain_behind_the_gates_back(db)
    with db.snapshot() as conn:
        late = verify(conn, key=key)
    assert late.first_bad_seq == 7 and "not keyed like the entries before it" in str(late.problem)
    assert key is not None
    for payload in (b"", b"x" * 1000):
        assert keyed_hasher(key)(payload) == hmac.new(key, payload, hashlib.sha256).hexdigest()


def test_keys_are_derived_the_same_in_every_process_and_differ_per_secret() -> None:
    """Every replica and the operator's CLI derive the same keys from WA_SECRET_KEY, so a
    checkpoint signed by one is checked by another; another secret gives other keys."""
    signer = Signer.from_secret(KEY)
    assert Signer.from_secret(KEY).public == signer.public
    assert Signer.from_secret(OTHER_KEY).public != signer.public
    assert chain_key(KEY) == chain_key(KEY) != chain_key(OTHER_KEY)
    assert chain_key(None) is None and Signer.optional(None) is None
    assert KEY not in repr(signer) and signer.public.key_id in repr(signer)
    assert PublicKey.parse(signer.public.text) == signer.public


def _append_plain_behind_the_gates_back(db: Database) -> None:
    """What a database-only writer can do: a well-formed entry hashed without the key."""
    with db.write() as session:
        session.execute(text("UPDATE audit_head SET keyed = false WHERE id = 1"))
    plain = build_gate(db)
    assert plain.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN}).audit_seq


def test_a_command_without_the_key_is_stopped_before_it_writes_to_a_keyed_log(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An operator's shell without WA_SECRET_KEY used to append plain entries after keyed
    ones, leaving a log that looked tampered for good."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WA_SECRET_KEY", KEY)
    assert main(["bootstrap-admin", ADMIN], out=io.StringIO()) == 0
    monkeypatch.delenv("WA_SECRET_KEY")
    assert main(["user", "add", "U0BOB0001"], out=io.StringIO()) == 2
    monkeypatch.setenv("WA_SECRET_KEY", KEY)
    assert main(["audit", "verify"], out=io.StringIO()) == 0


def test_the_scheduler_checkpoints_each_hour_that_saw_new_entries(
    db_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    from bot.config import Settings
    from bot.runtime import build_runtime
    from bot.scheduler import CHECKPOINT_JOB, build_scheduler
    from bot.slack.app import slack_client

    slack = FakeSlack().start()
    evidence = tmp_path / "checkpoints.log"
    settings = Settings(
        database_url=db_url,
        slack_bot_token="xoxb-0000-test",
        slack_api_url=slack.url,
        audit_channel="C0WAAUDIT",
        secret_key=KEY,
        audit_checkpoint_file=str(evidence),
    )
    runtime = build_runtime(settings, clock=clock)
    try:
        scheduler = build_scheduler(runtime, slack_client(settings), owner="t")
        assert CHECKPOINT_JOB in {job.name for job in scheduler.periodic}
        assert runtime.gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN}).ok
        clock.now = (int(clock()) // 3600 + 1) * 3600 + 30.0  # just past the next hour
        scheduler.tick()
        [line] = evidence.read_text().splitlines()
        assert parse(line).seq == 1
        posted = [c.body.get("text", "") for c in slack.named("chat.postMessage")]
        assert any(line in text for text in posted)
        clock.advance(3600)  # an hour with nothing new but the checkpoint's own entry
        scheduler.tick()
        assert len(evidence.read_text().splitlines()) == 1
        without_key = build_runtime(replace(settings, secret_key=None), clock=clock)
        bare = build_scheduler(without_key, slack_client(settings), owner="t2")
        assert CHECKPOINT_JOB not in {job.name for job in bare.periodic}
        without_key.db.dispose()
    finally:
        runtime.db.dispose()
        slack.stop()


def test_a_checkpoint_of_a_log_older_than_the_key_still_pins_everything_after_it(
    db: Database, gate: Gate, keyed: Gate
) -> None:
    """The first checkpoint after WA_SECRET_KEY is set signs a plain entry. Cutting what
    follows and appending plain entries must not pass: whoever signed held the key, so
    every entry after the signed one was keyed."""
    assert gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN}).ok
    _activity(gate, 2)  # plain entries 1-3, from before the key
    made = take_checkpoint(keyed)  # signs entry 3; its own entry 4 is keyed
    _activity(keyed, 2)
    _sql(
        db,
        "DELETE FROM audit_log WHERE seq > 3; "
        "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3), "
        "keyed = false WHERE id = 1",
    )
    append_forged(db)  # a plain entry 4, hashed as the unkeyed chain would
    with db.snapshot() as conn:
        assert verify(conn, key=chain_key(KEY)).ok  # the chain alone cannot tell
        checked = check(conn, made, key=chain_key(KEY))
    assert not checked.ok
    assert "entry 4 is not keyed" in str(checked.chain.problem)
