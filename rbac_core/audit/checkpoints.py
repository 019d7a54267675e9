"""Signed checkpoints of the audit chain, kept outside the database.

The hash chain and its head both live in the database, so whoever can write
to it can cut the tail and move the head, reset the log to genesis, or put
back an older copy, and the chain still verifies. A checkpoint is the head
(seq and hash) at a moment, signed with a key the database never holds
(CloudTrail's digest files and RFC 6962's signed tree heads work the same
way). Kept where the database's writers cannot reach (the audit channel, a
file, an auditor's notes), it pins history: a log that no longer holds that
entry with that exact hash, or whose head is behind it, was rewritten.

A checkpoint is one line of text, so it survives being pasted from Slack:

    wa-access-checkpoint v1 seq=42 hash=<64 hex> at=2026-11-18T09:00:00Z key=<16 hex> sig=<base64>

The signature covers the line up to ` sig=`, key id included. Making one is
the gate action `audit.checkpoint` (the scheduler or an operator only): it
reads the head in the gate's transaction, signs it, and its own audit entry
records the checkpoint, so the log shows when every checkpoint was taken.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection

from .. import audit
from ..actions.sweeps import system_only
from ..gate import Action, Context, Data, NoParams, Prepared, Result
from ..store import Sql
from ..store.models import AuditEntry, AuditHead
from ..values import BIGINT_MAX, WILDCARD
from .keys import NO_SIGNING_KEY, KeyUnavailable, PublicKey, Signer

TAG = "wa-access-checkpoint"
VERSION = "v1"
ACTION = "audit.checkpoint"

_LINE = re.compile(
    rf"{TAG} (?P<version>v[0-9]+) seq=(?P<seq>0|[1-9][0-9]{{0,18}}) "
    r"hash=(?P<hash>[0-9a-f]{64}) "
    r"at=(?P<at>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z) key=(?P<key>[0-9a-f]{16}) "
    r"sig=(?P<sig>[A-Za-z0-9+/]{86}==)"
)
_SHAPE = f"{TAG} {VERSION} seq=… hash=… at=… key=… sig=…"
_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_LOG = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_READ_HEAD = Sql(select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1))


class CheckpointRefused(ValueError):
    """A checkpoint that cannot be trusted: malformed, or not signed by the expected key."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: datetime
    key_id: str
    signature: bytes

    @property
    def at_text(self) -> str:
        return self.at.astimezone(UTC).strftime(_AT_FORMAT)

    @property
    def signed_text(self) -> str:
        """What the signature covers: everything before ` sig=`."""
        return (
            f"{TAG} {VERSION} seq={self.seq} hash={self.hash} at={self.at_text} key={self.key_id}"
        )

    @property
    def line(self) -> str:
        return f"{self.signed_text} sig={base64.b64encode(self.signature).decode('ascii')}"

    @property
    def name(self) -> str:
        """How messages refer to it: `checkpoint of entry 42 (2026-11-18T09:00:00Z)`."""
        return f"checkpoint of entry {self.seq} ({self.at_text})"


def sign(signer: Signer, seq: int, chain_hash: str, at: datetime) -> Checkpoint:
    unsigned = Checkpoint(seq, chain_hash, at.replace(microsecond=0), signer.public.key_id, b"")
    signature = signer.sign(unsigned.signed_text.encode("ascii"))
    return Checkpoint(unsigned.seq, unsigned.hash, unsigned.at, unsigned.key_id, signature)


def parse(text: str) -> Checkpoint:
    """One checkpoint line; surrounding blanks and Slack's code backticks are ignored.

    Everything else must match exactly: a line that was retyped or cut short is
    refused here rather than reported later as a bad signature.
    """
    line = text.strip().strip("`").strip()
    match = _LINE.fullmatch(line)
    if match is None:
        if line.startswith(f"{TAG} v") and not line.startswith(f"{TAG} {VERSION} "):
            version = line.split()[1]
            raise CheckpointRefused(
                f"checkpoint version {version} is not supported (this wa-access reads {VERSION})"
            )
        raise CheckpointRefused(f"not a wa-access checkpoint line: expected '{_SHAPE}'")
    if match["version"] != VERSION:
        raise CheckpointRefused(
            f"checkpoint version {match['version']} is not supported (this wa-access reads "
            f"{VERSION})"
        )
    try:
        at = datetime.strptime(match["at"], _AT_FORMAT).replace(tzinfo=UTC)
        signature = base64.b64decode(match["sig"], validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointRefused(f"not a wa-access checkpoint line: expected '{_SHAPE}'") from None
    if base64.b64encode(signature).decode("ascii") != match["sig"]:
        # Base64's last character carries padding bits a decoder ignores: 16 spellings
        # of one signature. Only the canonical one is the line that was signed.
        raise CheckpointRefused(f"not a wa-access checkpoint line: expected '{_SHAPE}'")
    seq = int(match["seq"])
    if seq > BIGINT_MAX:  # no log holds it; a query for it would overflow the column
        raise CheckpointRefused(f"seq={seq} is beyond any audit log")
    return Checkpoint(seq, match["hash"], at, match["key"], signature)


def newest_in_file(path: Path) -> Checkpoint | None:
    """The checkpoint with the highest seq in a file of checkpoint lines; None if it has none.

    Every line must parse: a damaged line in the evidence file is reported, not
    skipped, since skipping is how an older checkpoint would quietly win.
    """
    newest: Checkpoint | None = None
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                checkpoint = parse(text)
            except CheckpointRefused as exc:
                raise CheckpointRefused(f"{path}, line {number}: {exc}") from None
            if newest is None or checkpoint.seq >= newest.seq:
                newest = checkpoint
    return newest


def check_signature(checkpoint: Checkpoint, key: PublicKey) -> None:
    """Refuse a checkpoint not signed by `key` (the server's, or one an auditor pinned)."""
    if checkpoint.key_id != key.key_id:
        raise CheckpointRefused(
            f"the checkpoint was signed by key {checkpoint.key_id}, not by the expected key "
            f"{key.key_id}: refused"
        )
    if not key.verifies(checkpoint.signature, checkpoint.signed_text.encode("ascii")):
        raise CheckpointRefused(
            f"the checkpoint's signature does not verify with key {key.key_id}: the line was "
            "altered or forged"
        )


@dataclass(frozen=True)
class CheckpointCheck:
    """The whole chain's verification, and whether the log still holds the checkpoint."""

    chain: audit.VerifyResult
    checkpoint: Checkpoint
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.problem is None


def check(conn: Connection, checkpoint: Checkpoint, *, key: bytes | None) -> CheckpointCheck:
    """Verify the chain from genesis to the head, then that it holds the checkpointed entry.

    Both on `conn`'s one snapshot. The chain alone cannot tell a rewritten
    history from the real one; the checkpoint can, as long as its entry is
    still covered: its seq must be at or before the head, and the entry there
    must carry exactly the signed hash (every earlier entry is fixed by it).
    The signature is checked before (`check_signature`), by the caller who
    knows which public key to trust.
    """
    chain = audit.verify(conn, key=key, keyed_after=checkpoint.seq)
    held = _hash_at(conn, checkpoint.seq)
    return CheckpointCheck(chain, checkpoint, _problem(checkpoint, chain.head_seq, held))


def _hash_at(conn: Connection, seq: int) -> str | None:
    if seq == 0:
        return audit.GENESIS_HASH
    found = conn.execute(select(_LOG.c.hash).where(_LOG.c.seq == seq)).scalar()
    return None if found is None else str(found)


def _problem(checkpoint: Checkpoint, head_seq: int, held: str | None) -> str | None:
    seq = checkpoint.seq
    if head_seq < seq:
        return (
            f"the log's head is entry {head_seq}, behind the {checkpoint.name}: entries were "
            "cut off, the log was reset, or an older copy of the database was restored"
        )
    if held is None:
        return f"entry {seq}, which the {checkpoint.name} covers, is missing from the log"
    if held != checkpoint.hash:
        return (
            f"entry {seq} has hash {held[:16]}… but the {checkpoint.name} signed "
            f"{checkpoint.hash[:16]}…: the log up to entry {seq} was rewritten"
        )
    return None


def has_new_entries(conn: Connection) -> bool:
    """Whether the log has grown since the last checkpoint: the scheduler's cheap look.

    The newest entry is the last checkpoint's own entry exactly when nothing
    happened since, so one indexed read answers it and an idle hour writes
    nothing at all (not even a refusal). An empty log has nothing to pin.
    """
    head = select(_HEAD.c.seq).where(_HEAD.c.id == 1).scalar_subquery()
    query = select(_LOG.c.action, _LOG.c.outcome).where(_LOG.c.seq == head)
    newest = conn.execute(query).first()
    return newest is not None and tuple(newest) != (ACTION, "done")


@dataclass(frozen=True)
class CheckpointData(Data):
    checkpoint: Checkpoint


class CheckpointAction(Action[NoParams]):
    """Sign the head as the gate's transaction sees it; the entry it audits records the line.

    Only the scheduler and an operator at the command line: a checkpoint is
    evidence for auditors, not something a chat user should be able to make
    on demand. Read-only for the gate: it writes nothing but its audit entry,
    whose `prev_hash` is then the checkpointed hash itself.
    """

    name = ACTION
    params_type = NoParams
    read_only = True

    def __init__(self, signer: Signer | None) -> None:
        self._signer = signer

    def prepare(self, ctx: Context, params: NoParams) -> Prepared:
        system_only(ctx, "sign an audit checkpoint")
        if self._signer is None:
            raise KeyUnavailable(NO_SIGNING_KEY)
        return Prepared({}, None, WILDCARD, "audit_log", "sign an audit checkpoint")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        assert self._signer is not None  # prepare refused otherwise
        head = ctx.txn.first(_READ_HEAD)
        if head is None:
            raise RuntimeError("the audit head row is missing: run `wa-access migrate`")
        checkpoint = sign(self._signer, int(head[0]), str(head[1]), ctx.now)
        return Result(
            f"Signed the {checkpoint.name}.",
            data=CheckpointData(checkpoint),
            details={"seq": checkpoint.seq, "hash": checkpoint.hash, "line": checkpoint.line},
        )


def checkpoint_actions(signer: Signer | None) -> dict[str, Action[Any]]:
    return {ACTION: CheckpointAction(signer)}
