"""The tamper-evident audit log: an append-only SHA-256 hash chain.

Each entry's hash covers a canonical serialisation of its fields and the hash
of the entry before it. The last link is also kept in `audit_head`, outside the
log, so cutting entries off the tail is as detectable as editing, deleting or
reordering them. Appends lock the head row, so writers in several processes
queue up behind each other instead of forking the chain.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .models import AuditEntry, AuditHead

GENESIS_HASH = "0" * 64
SURFACES = frozenset({"slack", "whatsapp", "api", "scheduler", "cli"})

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
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
    """Details as stored and hashed: sorted keys, no whitespace, UTF-8 kept as is."""
    return _JSON.encode(dict(details))


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
) -> str:
    """SHA-256 over a JSON array of the fields: unambiguous, and cheap to rebuild."""
    payload = _JSON.encode(
        [seq, ts_us, actor, surface, action, target, decision, outcome, details, prev_hash]
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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


def append(session: Session, entries: Iterable[NewEntry]) -> list[int]:
    """Append entries in order inside the caller's transaction; returns their seqs.

    The head row is read FOR UPDATE, so concurrent appenders on PostgreSQL wait
    for each other; on SQLite the write transaction already excludes them.
    """
    head_seq, head_hash = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).with_for_update()
    ).one()
    rows: list[dict[str, Any]] = []
    prev = head_hash
    seq = head_seq
    for entry in entries:
        if entry.surface not in SURFACES:
            raise ValueError(f"unknown surface {entry.surface!r}")
        seq += 1
        details = canonical_details(entry.details)
        digest = entry_hash(
            seq,
            entry.ts_us,
            entry.actor,
            entry.surface,
            entry.action,
            entry.target,
            entry.decision,
            entry.outcome,
            details,
            prev,
        )
        rows.append(
            {
                "seq": seq,
                "ts_us": entry.ts_us,
                "actor": entry.actor,
                "surface": entry.surface,
                "action": entry.action,
                "target": entry.target,
                "decision": entry.decision,
                "outcome": entry.outcome,
                "details": details,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    if not rows:
        return []
    session.execute(insert(AuditEntry), rows)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq, hash=prev))
    return [r["seq"] for r in rows]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


def _stream(conn: Connection, batch: int) -> Iterator[tuple[Any, ...]]:
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(
        select(*(AuditEntry.__table__.c[name] for name in _COLUMNS)).order_by(AuditEntry.seq)
    )
    for partition in result.partitions(batch):
        yield from partition


def verify(conn: Connection, *, batch: int = 20_000) -> VerifyResult:
    """Walk the whole chain once, in seq order, with memory bounded by `batch`.

    Names the first entry that does not hold: a gap in seq (deleted or moved
    entries), a broken link (reordered or spliced), a hash that does not match
    the content (edited), or a tail that stops short of the head (truncated).
    """
    head_seq, head_hash = conn.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)
    ).one()
    sha256 = hashlib.sha256
    encode = _JSON.encode
    expected_seq = 1
    prev = GENESIS_HASH
    count = 0

    def bad(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(False, count, head_seq, head_hash, seq, problem)

    for (
        seq,
        ts_us,
        actor,
        surface,
        action,
        target,
        decision,
        outcome,
        details,
        link,
        digest,
    ) in _stream(conn, batch):
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
        payload = encode(
            [seq, ts_us, actor, surface, action, target, decision, outcome, details, link]
        )
        if sha256(payload.encode("utf-8")).hexdigest() != digest:
            return bad(seq, f"entry {seq} does not match its hash: it was edited")
        prev = digest
        expected_seq += 1
        count += 1
    last = expected_seq - 1
    if head_seq > last:
        return bad(
            last + 1,
            f"the log ends at entry {last} but the chain head records {head_seq} entries: "
            "the tail was truncated",
        )
    if head_seq < last or head_hash != prev:
        return bad(
            head_seq + 1 if head_seq < last else last,
            f"the chain head (entry {head_seq}) does not match the log's last entry {last}",
        )
    return VerifyResult(True, count, head_seq, head_hash)


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
            item["details"] = json.loads(record["details"])
            out.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count
