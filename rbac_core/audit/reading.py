"""Reading the audit log back: verifying the chain, streaming entries, exporting them.

Verify and export run on one consistent snapshot (`Database.snapshot`, or the
one `Gate.snapshot_for` hands out) and stream the log in seq order, so memory
stays flat whatever its length.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..store.models import AuditEntry
from .chain import (
    _COLUMNS,
    _FIELDS_SEPARATORS,
    _HEAD,
    _LOG,
    _SEP_BYTES,
    GENESIS_HASH,
    _payload,
)
from .keys import keyed_hasher


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
