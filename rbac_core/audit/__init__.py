"""The tamper-evident audit log: an append-only hash chain, and its evidence outside it.

Each entry's hash covers a canonical serialisation of its fields and the hash
of the entry before it. The last link is also kept in `audit_head`, outside the
log, so cutting entries off the tail is as detectable as editing, deleting or
reordering them. Appends lock the head row, so writers in several processes
queue up behind each other instead of forking the chain.

With a chain key (`keys`, never in the database) each hash is an HMAC, so a
database-only writer can neither forge an entry nor re-hash after an edit;
unkeyed entries verify only before the first keyed one. Cutting the tail,
resetting or restoring an older copy are caught by signed `checkpoints`.

The package: `chain` (hashing and appending), `reading` (verify, stream,
export), `keys` (keys derived from WA_SECRET_KEY), `checkpoints` (signed
checkpoints of the head).
"""

from .chain import (
    GENESIS_HASH,
    SEP,
    ChainKeyMissing,
    NewEntry,
    append,
    canonical_details,
    entry_hash,
    is_keyed,
    lock_head,
    micros,
)
from .reading import EXPORT_FIELDS, VerifyResult, export, iter_entries, verify

__all__ = [
    "EXPORT_FIELDS",
    "GENESIS_HASH",
    "SEP",
    "ChainKeyMissing",
    "NewEntry",
    "VerifyResult",
    "append",
    "canonical_details",
    "entry_hash",
    "export",
    "is_keyed",
    "iter_entries",
    "lock_head",
    "micros",
    "verify",
]
