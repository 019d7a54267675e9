"""`wa-access audit verify | checkpoint | public-key`: the chain and its signed checkpoints.

Apart from cli.py because checking a checkpoint has several ways to refuse,
each of which must say in one line what is wrong: a malformed line, a line
signed by another key, or a log that no longer holds what was signed.
Exit codes as everywhere in the CLI: 0 intact, 1 refused or tampered, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from handlers.scheduled.checkpoints import CheckpointFailed, publish, take_checkpoint
from rbac_core import audit
from rbac_core.audit.checkpoints import (
    TAG,
    Checkpoint,
    CheckpointRefused,
    check,
    check_signature,
    newest_in_file,
    parse,
)
from rbac_core.audit.keys import MalformedPublicKey, PublicKey, Signer
from rbac_core.principals import OPERATOR, Surface

from ..config import Settings
from . import CliError, _runtime, _settings

NO_KEY_HINT = " (WA_SECRET_KEY is not set here: a keyed log can only be checked with it)"


def add_commands(aud_sub: Any) -> None:
    """The chain's subcommands, added to `wa-access audit`'s subparsers."""
    verify = aud_sub.add_parser("verify", help="check the hash chain (and a signed checkpoint)")
    verify.add_argument(
        "--checkpoint",
        metavar="LINE|FILE",
        help="a checkpoint line, or a file of them (the newest counts); "
        "default: the newest in WA_AUDIT_CHECKPOINT_FILE",
    )
    verify.add_argument(
        "--public-key",
        metavar="KEY",
        help="trust only this key (as printed by `audit public-key`), not WA_SECRET_KEY's",
    )
    verify.set_defaults(func=cmd_audit_verify)
    aud_sub.add_parser(
        "checkpoint",
        help="sign the chain's head; print it, append it to WA_AUDIT_CHECKPOINT_FILE, post it",
    ).set_defaults(func=cmd_audit_checkpoint)
    aud_sub.add_parser(
        "public-key", help="print the public key that checks checkpoints, for auditors"
    ).set_defaults(func=cmd_audit_public_key)


def cmd_audit_verify(args: argparse.Namespace, out: TextIO) -> int:
    """The chain from genesis to the head; with a checkpoint, also that the log still holds it."""
    runtime = _runtime(writes=False)  # reads the log on a snapshot, outside the gate
    settings = runtime.settings
    checkpoint = _checkpoint(args.checkpoint, settings)
    if checkpoint is None and args.public_key:
        raise CliError("--public-key checks a checkpoint: give --checkpoint LINE|FILE too", 2)
    if checkpoint is not None:
        key = _trusted_key(args.public_key, settings)
        try:
            check_signature(checkpoint, key)
        except CheckpointRefused as exc:
            raise CliError(f"checkpoint refused: {exc}") from None
    chain_key = runtime.gate.chain_key
    with runtime.db.snapshot() as conn:
        if checkpoint is None:
            result, problem = audit.verify(conn, key=chain_key), None
        else:
            held = check(conn, checkpoint, key=chain_key)
            result, problem = held.chain, held.problem
    if problem is not None:
        print(f"audit log TAMPERED: {problem}", file=sys.stderr)
    if not result.ok:
        hint = "" if chain_key is not None else NO_KEY_HINT
        print(
            f"audit log TAMPERED: first bad entry {result.first_bad_seq}: {result.problem}{hint}",
            file=sys.stderr,
        )
    if problem is not None or not result.ok:
        return 1
    held_text = f"; it holds the {checkpoint.name}" if checkpoint is not None else ""
    print(
        f"audit log intact: {result.entries} entries, head {result.head_hash}{held_text}",
        file=out,
    )
    return 0


def _checkpoint(source: str | None, settings: Settings) -> Checkpoint | None:
    """The checkpoint to hold the log to: the flag's, else the newest in the configured file."""
    if source is not None:
        text = source.strip().strip("`").strip()
        if text.startswith(TAG):
            try:
                return parse(text)
            except CheckpointRefused as exc:
                raise CliError(f"checkpoint refused: {exc}") from None
        return _from_file(Path(source), required=True)
    if settings.audit_checkpoint_file:
        return _from_file(Path(settings.audit_checkpoint_file), required=False)
    return None


def _from_file(path: Path, *, required: bool) -> Checkpoint | None:
    """The newest checkpoint in `path`.

    WA_AUDIT_CHECKPOINT_FILE not existing yet is said aloud rather than failing
    a fresh install, where no checkpoint was ever taken; a file named on the
    command line must exist and hold one.
    """
    if "\x00" in str(path):  # no file can be named so; Path would raise ValueError
        raise CliError(f"checkpoint refused: {str(path)!r} is neither a checkpoint line nor a file")
    if not required and not path.exists():
        print(
            f"(no checkpoint yet: {path} does not exist; the chain alone is checked)",
            file=sys.stderr,
        )
        return None
    try:
        found = newest_in_file(path)
    except CheckpointRefused as exc:
        raise CliError(f"checkpoint refused: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read checkpoints from {path}: {exc.strerror or exc}") from None
    if found is None:
        if required:
            raise CliError(f"checkpoint refused: {path} holds no checkpoint line")
        print(f"(no checkpoint yet in {path}; the chain alone is checked)", file=sys.stderr)
    return found


def _trusted_key(text: str | None, settings: Settings) -> PublicKey:
    """The key a checkpoint must be signed by: the one given, else this server's own."""
    if text:
        try:
            return PublicKey.parse(text)
        except MalformedPublicKey as exc:
            raise CliError(f"--public-key: {exc}", 2) from None
    if not settings.secret_key:
        raise CliError(
            "checking a checkpoint needs WA_SECRET_KEY or --public-key (from "
            "`wa-access audit public-key`)",
            2,
        )
    return Signer.from_secret(settings.secret_key).public


def cmd_audit_checkpoint(args: argparse.Namespace, out: TextIO) -> int:
    """Sign the head now: printed, appended to WA_AUDIT_CHECKPOINT_FILE, posted to Slack."""
    from ..slack.app import slack_client

    runtime = _runtime(("WA_SECRET_KEY",))
    settings = runtime.settings
    try:
        checkpoint = take_checkpoint(runtime.gate, actor=OPERATOR, surface=Surface.CLI)
    except CheckpointFailed as exc:
        raise CliError(str(exc)) from None
    print(checkpoint.line, file=out)
    postable = settings.slack_bot_token and settings.audit_channel
    delivery = publish(
        checkpoint,
        client=slack_client(settings) if postable else None,
        channel=settings.audit_channel,
        path=settings.audit_checkpoint_file,
    )
    for note in delivery.notes:
        print(f"({note})", file=sys.stderr)
    if delivery.delivered:
        print(f"{checkpoint.name} sent to {', '.join(delivery.delivered)}", file=sys.stderr)
    return 1 if delivery.failed else 0


def cmd_audit_public_key(args: argparse.Namespace, out: TextIO) -> int:
    """The public half of the checkpoint key; needs no database."""
    settings = _settings(("WA_SECRET_KEY",))
    assert settings.secret_key is not None  # required above
    public = Signer.from_secret(settings.secret_key).public
    print(public.text, file=out)
    print(f"(key id {public.key_id}, as in the key= field of checkpoints)", file=sys.stderr)
    return 0
