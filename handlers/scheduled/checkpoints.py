"""Taking a signed audit checkpoint and putting it where the database cannot reach.

A checkpoint helps only once it is outside the database: in the audit channel
(Slack keeps the message however the database is rewritten) and, when
WA_AUDIT_CHECKPOINT_FILE is set, appended to a file on the operator's side.
`wa-access audit checkpoint` makes one on demand; the scheduler calls
`hourly_audit_checkpoint` once an hour and makes one only when entries were
added since the last.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rbac_core import Gate
from rbac_core.audit.checkpoints import ACTION, Checkpoint, has_new_entries
from rbac_core.principals import SCHEDULER, Principal, Surface

if TYPE_CHECKING:  # only for annotations: `wa-access` need not load slack_sdk to start
    from slack_sdk import WebClient

log = logging.getLogger(__name__)


class CheckpointFailed(RuntimeError):
    """The gate refused the checkpoint, or it reached none of the places it must go."""


@dataclass
class Delivery:
    """Where a checkpoint went, and one line for each place it could not go."""

    checkpoint: Checkpoint
    delivered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False


def take_checkpoint(
    gate: Gate, *, actor: Principal = SCHEDULER, surface: str = Surface.SCHEDULER
) -> Checkpoint:
    """Sign the head through the gate (authorised and audited as `audit.checkpoint`)."""
    outcome = gate.submit(actor, surface, ACTION, {})
    if outcome.status != "done":
        raise CheckpointFailed(outcome.message)
    checkpoint: Checkpoint = outcome.data["checkpoint"]
    return checkpoint


def append_line(path: Path, line: str) -> None:
    """Append one line and flush it to disk: the file is evidence, a lost line is a gap."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def slack_text(checkpoint: Checkpoint) -> str:
    return (
        f":lock: Audit {checkpoint.name}. Keep it: "
        f"`wa-access audit verify --checkpoint LINE` proves the log still holds it.\n"
        f"`{checkpoint.line}`"
    )


def publish(
    checkpoint: Checkpoint,
    *,
    client: WebClient | None,
    channel: str | None,
    path: str | None,
) -> Delivery:
    """Append the line to `path` and post it to `channel`, each when configured.

    A destination that is not configured is a note, not a failure; one that is
    configured and fails marks the delivery failed, and the other still gets it.
    """
    delivery = Delivery(checkpoint)
    if path:
        try:
            append_line(Path(path), checkpoint.line)
            delivery.delivered.append(path)
        except OSError as exc:
            delivery.failed = True
            delivery.notes.append(f"cannot append to {path}: {exc.strerror or exc}")
    if client is None or not channel:
        delivery.notes.append(
            "not posted to Slack: SLACK_BOT_TOKEN and WA_AUDIT_CHANNEL are needed for that"
        )
        return delivery
    try:
        client.chat_postMessage(channel=channel, text=slack_text(checkpoint))
        delivery.delivered.append(channel)
    except Exception as exc:  # a Slack error or the network: say so, keep the file copy
        delivery.failed = True
        delivery.notes.append(f"could not post to {channel}: {type(exc).__name__}")
    return delivery


def make_checkpoint_if_new(
    gate: Gate,
    client: WebClient | None,
    channel: str | None,
    path: str | None,
) -> str:
    """The scheduler's hourly job: a checkpoint when the log grew since the last one.

    Returns a one-line summary. Raises CheckpointFailed when the gate refuses
    (no WA_SECRET_KEY) or the checkpoint reached none of its destinations, so
    the run is recorded as failed and, after the last retry, alerted.
    """
    if not gate.peek(has_new_entries):
        return "no new audit entries since the last checkpoint"
    checkpoint = take_checkpoint(gate)
    log.info("audit checkpoint: %s", checkpoint.line)
    delivery = publish(checkpoint, client=client, channel=channel, path=path)
    for note in delivery.notes:
        log.warning("audit %s: %s", checkpoint.name, note)
    if not delivery.delivered:
        raise CheckpointFailed(f"the {checkpoint.name} reached no destination")
    return f"{checkpoint.name} sent to {', '.join(delivery.delivered)}"


def hourly_audit_checkpoint(
    gate: Gate, client: WebClient | None, channel: str | None, path: str | None
) -> Callable[[datetime, Callable[[], None]], str]:
    """`make_checkpoint_if_new` shaped as a `Periodic` job's run(period, renew)."""

    def run(period: datetime, renew: Callable[[], None]) -> str:
        return make_checkpoint_if_new(gate, client, channel, path)

    return run
