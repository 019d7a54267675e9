"""The tamper-evident audit log: an append-only SHA-256 hash chain.

Each entry's hash covers a canonical serialisation of its fields and the hash
of the entry before it. The last link is also kept in `audit_head`, outside the
log, so cutting entries off the tail is as detectable as editing, deleting or
reordering them. Appends lock the head row, so writers in several processes
queue up behind each other instead of forking the chain.

With a chain key (`keys.py`, never in the database) each hash is an HMAC,
so a database-only writer can neither forge an entry nor re-hash after an edit;
unkeyed entries verify only before the first keyed one. Cutting the tail,
resetting or restoring an older copy are caught by `checkpoints.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, insert, select, update

from .. import signals
from ..principals import SURFACES
from ..store import Sql, Txn
from ..store.models import AuditEntry, AuditHead
from .keys import keyed_hasher

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
