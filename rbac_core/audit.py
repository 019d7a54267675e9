"""The tamper-evident audit log: an append-only SHA-256 hash chain.

Each entry's hash covers a canonical serialisation of its fields and the hash
of the entry before it. The last link is also kept in `audit_head`, outside the
log, so cutting entries off the tail is as detectable as editing, deleting or
reordering them. Appends lock the head row, so writers in several processes
queue up behind each other instead of forking the chain.

With a chain key (`audit_keys`, never in the database) each hash is an HMAC,
so a database-only writer can neither forge an entry nor re-hash after an edit;
unkeyed entries verify only before the first keyed one. Cutting the tail,
resetting or restoring an older copy are caught by `audit_checkpoint`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from . import signals
from .audit_keys import keyed_hasher
from .db import Sql, Txn
from .models import AuditEntry, AuditHead
from .principals import SURFACES

GENESIS_HASH = "0" * 64

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=repr)
SEP = "\x1f"
_SEP_BYTES = SEP.encode("ascii")
_FIELDS_SEPARATORS = 9
_COLUMNS = (
    "seq",
    "ts_us",
    "actor",
    "surface",
    "action",
    "target",
    "decision",
    "outcome",
    "details",
    "prev_hash",
    "hash",
)


def canonical_details(details: Mapping[str, Any]) -> str:
    """Details as stored and hashed: sorted keys, no whitespace, UTF-8 kept as is.

    Never fails: a value JSON cannot hold is stored as its repr, and text that
    is not valid Unicode (a lone surrogate) has the offending code points replaced.
    """
    return _valid_unicode(_JSON.encode(dict(details)))


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _payload(
    seq: int,
    ts_us: int,
    actor: str,
    surface: str,
    action: str,
    target: str,
    decision: str,
    outcome: str,
    details: str,
    prev_hash: str,
) -> bytes:
    """The bytes a link hashes: the fields in order, joined by U+001F, UTF-8.

    Unambiguous because no stored field may contain U+001F (`append` replaces
    it, `details` is JSON which escapes it, and `verify` refuses a payload with
    more than nine separators). Chosen over a JSON array because `verify` can
    rebuild it with one join of the bytes SQLite hands back, without decoding
    or escaping anything, which halves its cost per entry.
    """
    return SEP.join(
        (
            str(seq),
            str(ts_us),
            actor,
            surface,
            action,
            target,
            decision,
            outcome,
            details,
            prev_hash,
        )
    ).encode("utf-8")


def entry_hash(
    seq: int,
    ts_us: int,
    actor: str,
    surface: str,
    action: str,
    target: str,
    decision: str,
    outcome: str,
    details: str,
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """SHA-256 (HMAC-SHA256 under `key`) over the canonical payload, as lowercase hex."""
    return _digest_function(key)(
        _payload(seq, ts_us, actor, surface, action, target, decision, outcome, details, prev_hash)
    )


def _sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _digest_function(key: bytes | None) -> Callable[[bytes], str]:
    return _sha256_hex if key is None else keyed_hasher(key)


def _clean(value: str) -> str:
    """No separator (it would make the payload ambiguous) and no NUL (C tools
    reading the database would stop at one) ever reaches the log."""
    if SEP in value or "\x00" in value:
        value = value.replace(SEP, "\ufffd").replace("\x00", "\ufffd")
    return _valid_unicode(value)


@dataclass(frozen=True)
class NewEntry:
    actor: str
    surface: str
    action: str
    target: str
    decision: Literal["allow", "deny"]
    outcome: str
    details: Mapping[str, Any]
    ts_us: int


def micros(moment: datetime | float) -> int:
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return round(seconds * 1_000_000)


_LOG = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_LOCK_HEAD = Sql(
    select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.keyed).where(_HEAD.c.id == 1).with_for_update()
)
_INSERT = Sql(insert(_LOG).values({name: bindparam(name) for name in _COLUMNS}))
_MOVE_HEAD = Sql(
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"), keyed=bindparam("keyed"))
)
_KEYED = Sql(select(_HEAD.c.keyed).where(_HEAD.c.id == 1))


class ChainKeyMissing(RuntimeError):
    """This process has no chain key, and the log it would append to is keyed."""

    def __init__(self) -> None:
        super().__init__(
            "the audit log is keyed with WA_SECRET_KEY, which is not set in this process: "
            "set it to the server's value (entries written without it would make the log "
            "look tampered)"
        )


def lock_head(txn: Txn) -> None:
    """Take the head's lock now instead of at the append, for an action whose writes
    must stand or fall with its audit entry: once it holds the lock, waiting for it
    can no longer fail the append after the action has done its work."""
    txn.first(_LOCK_HEAD)


def is_keyed(txn: Txn) -> bool:
    """Whether an entry was ever hashed under the chain key (then every later one must be)."""
    row = txn.first(_KEYED)
    return bool(row and row[0])


def append(txn: Txn, entries: Iterable[NewEntry], *, key: bytes | None = None) -> list[int]:
    """Append entries in order inside the caller's transaction; returns their seqs.

    With `key` (the gate's chain key) the hashes are HMACs under it.

    The head row is read FOR UPDATE, so concurrent appenders on PostgreSQL wait
    for each other; on SQLite the write transaction already excludes them.
    Every request appends at least once, so the statements are compiled once
    and run on the DB-API cursor (`Txn.run`): through the ORM the audit step
    cost three times as much as the decision it records.
    """
    head = txn.first(_LOCK_HEAD)
    if head is None:
        raise RuntimeError("the audit head row is missing: run `wa-access migrate`")
    head_seq, head_hash, keyed = int(head[0]), str(head[1]), bool(head[2])
    if keyed and key is None:
        raise ChainKeyMissing()
    digest_of = _digest_function(key)
    rows: list[dict[str, Any]] = []
    prev = head_hash
    seq = head_seq
    for entry in entries:
        if entry.surface not in SURFACES:
            raise ValueError(f"unknown surface {entry.surface!r}")
        seq += 1
        details = canonical_details(entry.details)
        actor, action, target, outcome = (
            _clean(entry.actor),
            _clean(entry.action),
            _clean(entry.target),
            _clean(entry.outcome),
        )
        digest = digest_of(
            _payload(
                seq,
                entry.ts_us,
                actor,
                entry.surface,
                action,
                target,
                entry.decision,
                outcome,
                details,
                prev,
            )
        )
        rows.append(
            {
                "seq": seq,
                "ts_us": entry.ts_us,
                "actor": actor,
                "surface": entry.surface,
                "action": action,
                "target": target,
                "decision": entry.decision,
                "outcome": outcome,
                "details": details,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    if not rows:
        return []
    if len(rows) == 1:
        txn.run(_INSERT, rows[0])
    else:
        txn.run_many(_INSERT, rows)
    txn.run(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev, "keyed": keyed or key is not None})
    if signals.audit_appended.listeners:
        count = len(rows)
        txn.after_commit(lambda: signals.audit_appended.send(count))
    return [r["seq"] for r in rows]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


_SELECT_LOG = select(*(_LOG.c[name] for name in _COLUMNS)).order_by(_LOG.c.seq)


# Integers come back as their decimal text, so each payload is one C-level join of
# the row's bytes. (SQLite's printf would be faster still, but stops at a NUL,
# which would let an edit hide text behind one.)
_RAW_SELECT_FIELDS = (
    "SELECT seq, CAST(seq AS TEXT), CAST(ts_us AS TEXT), "
    f"{', '.join(_COLUMNS[2:])} FROM {AuditEntry.__tablename__} ORDER BY seq"
)


def _stream_payloads(conn: Connection, batch: int) -> Iterator[tuple[Any, ...]]:
    """(seq, payload bytes, prev_hash bytes, hash bytes) in seq order, `batch` rows at a time.

    On SQLite the DB-API cursor is read directly with `text_factory=bytes`, so
    nothing is decoded only to be encoded again; on PostgreSQL a server-side
    cursor keeps memory flat.
    """
    if conn.dialect.name == "sqlite":
        conn.execute(select(1))  # open the snapshot transaction on this connection
        raw = conn.connection.dbapi_connection
        assert raw is not None
        previous = raw.text_factory
        raw.text_factory = bytes
        cursor = raw.cursor()
        try:
            cursor.execute(_RAW_SELECT_FIELDS)
            join = _SEP_BYTES.join
            while rows := cursor.fetchmany(batch):
                for row in rows:
                    try:
                        payload: bytes | None = join(row[1:11])
                    except TypeError:  # a NULL where text belongs
                        payload = None
                    yield row[0], payload, row[10], row[11]
        finally:
            cursor.close()
            raw.text_factory = previous
        return
    for row in _stream(conn, batch):
        try:
            text_payload: bytes | None = _payload(*row[:10])
        except TypeError:
            text_payload = None
        yield row[0], text_payload, row[9].encode("utf-8"), row[10].encode("utf-8")


def _stream(conn: Connection, batch: int) -> Iterator[tuple[Any, ...]]:
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(_SELECT_LOG)
    for partition in result.partitions(batch):
        yield from partition


def verify(
    conn: Connection,
    *,
    batch: int = 2_000,
    key: bytes | None = None,
    keyed_after: int | None = None,
) -> VerifyResult:
    """Walk the whole chain once, in seq order, with memory bounded by `batch`.

    Names the first entry that does not hold: a gap in seq (deleted or moved
    entries), a broken link (reordered or spliced), a hash that does not match
    the content (edited), an unkeyed entry after keyed ones (forged without
    `key`), or a tail that stops short of the head (truncated).
    `conn` must see one snapshot for the head and the log (`Database.snapshot()`),
    or an append landing mid-walk would look like a mismatched head.
    With `keyed_after` (a signed checkpoint's seq, with `key`) every later entry
    must be keyed: whoever signed it held the key, so every entry written after
    it was keyed, even when the checkpointed entry itself predates the key.
    """
    head_seq, head_hash = conn.execute(
        select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)
    ).one()
    sha256 = hashlib.sha256
    keyed = keyed_hasher(key) if key is not None else None
    legacy = True  # unkeyed entries are accepted only until the first keyed one
    plain_until = keyed_after if keyed is not None and keyed_after is not None else None
    separator = _SEP_BYTES
    separators = _FIELDS_SEPARATORS
    expected_seq = 1
    prev = GENESIS_HASH.encode("ascii")
    count = 0

    def bad(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(False, count, head_seq, head_hash, seq, problem)

    for seq, payload, link, digest in _stream_payloads(conn, batch):
        if seq != expected_seq:
            if seq > expected_seq:
                return bad(
                    expected_seq,
                    f"entry {expected_seq} is missing (the next entry is {seq}): "
                    "entries were deleted",
                )
            return bad(seq, f"entry {seq} appears out of order")
        if link != prev:
            return bad(seq, f"entry {seq} does not link to entry {seq - 1}: reordered or replaced")
        if payload is None or payload.count(separator) != separators:
            return bad(seq, f"entry {seq} does not match its hash: it was edited")
        if keyed is None:
            if sha256(payload).hexdigest().encode("ascii") != digest:
                return bad(seq, f"entry {seq} does not match its hash: it was edited")
        elif keyed(payload).encode("ascii") == digest:
            legacy = False
        elif sha256(payload).hexdigest().encode("ascii") != digest:
            return bad(seq, f"entry {seq} does not match its hash: it was edited")
        elif not legacy or (plain_until is not None and seq > plain_until):
            return bad(
                seq,
                f"entry {seq} is not keyed like the entries before it: it was forged "
                "or rewritten without the chain key",
            )
        prev = digest
        expected_seq += 1
        count += 1
    problem = _head_problem(head_seq, head_hash, expected_seq - 1, prev)
    if problem is not None:
        return bad(*problem)
    return VerifyResult(True, count, head_seq, head_hash)


def _head_problem(head_seq: int, head_hash: str, last: int, prev: bytes) -> tuple[int, str] | None:
    """(first bad seq, problem) when the head row and the log's last entry disagree."""
    if head_seq > last:
        return (
            last + 1,
            f"the log ends at entry {last} but the chain head records {head_seq} entries: "
            "the tail was truncated",
        )
    if head_seq < last or head_hash.encode("ascii") != prev:
        return (
            head_seq + 1 if head_seq < last else last,
            f"the chain head (entry {head_seq}) does not match the log's last entry {last}",
        )
    return None


def iter_entries(conn: Connection, *, batch: int = 5_000) -> Iterator[dict[str, Any]]:
    for row in _stream(conn, batch):
        record = dict(zip(_COLUMNS, row, strict=True))
        record["time"] = (
            datetime.fromtimestamp(record["ts_us"] / 1_000_000, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )
        yield record


EXPORT_FIELDS = (
    "seq",
    "time",
    "actor",
    "surface",
    "action",
    "target",
    "decision",
    "outcome",
    "details",
    "prev_hash",
    "hash",
)


def export(conn: Connection, out: IO[str], fmt: Literal["csv", "jsonl"]) -> int:
    """Stream the log to `out`; returns the number of entries written."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_FIELDS)
        for record in iter_entries(conn):
            writer.writerow([record[f] for f in EXPORT_FIELDS])
            count += 1
    else:
        for record in iter_entries(conn):
            item = {f: record[f] for f in EXPORT_FIELDS}
            try:
                item["details"] = json.loads(record["details"])
            except ValueError:  # an edited row: export it as found, verify will say so
                item["details"] = record["details"]
            out.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count
