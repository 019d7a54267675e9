"""People and numbers the core knows about, and scope resolution."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from .errors import UnknownNumber, UnknownUser
from .store import Sql, Txn
from .store.models import Number, User
from .values import WILDCARD, is_phone_number_id, parse_e164, parse_user_id

NAME_MAX = 200  # users.name


def ensure_user(session: Session, user_id: str, now: datetime, name: str | None = None) -> User:
    """Register a user a surface has verified (Slack users.info, an operator's CLI call).

    The name is a surface's text (Slack's `user_name`): kept only as far as the
    column holds it and without control characters, so an odd one is stored the
    same on every database instead of failing the request on PostgreSQL.
    """
    user_id = parse_user_id(user_id)
    name = _storable_name(name)
    user = session.get(User, user_id)
    if user is None:
        user = User(id=user_id, name=name, active=True, created_at=now)
        session.add(user)
        session.flush()
    elif name and user.name != name:
        user.name = name
    return user


def _storable_name(name: str | None) -> str | None:
    if name is None:
        return None
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()[:NAME_MAX]
    return cleaned.encode("utf-8", "replace").decode("utf-8") or None


def is_registered(session: Session, user_id: str) -> bool:
    return session.get(User, user_id) is not None


def users_named(session: Session, name: str) -> list[str]:
    """Ids of the registered people whose name is `name` (any case), for surfaces
    where people type names rather than pick them (the console)."""
    wanted = name.strip().lower()
    if not wanted or len(wanted) > 200:
        return []
    rows = session.scalars(select(User.id).where(func.lower(User.name) == wanted).limit(5))
    return sorted(rows)


def require_user(session: Session, user_id: str, *, lock: bool = False) -> User:
    """The registered person; with `lock`, their row is held until the transaction ends.

    Locking the person serialises everything that reads, then writes, state of
    theirs that may not exist yet (a 2FA enrolment, an open access request):
    a row lock on PostgreSQL; SQLite's single writer already does it.
    """
    user_id = parse_user_id(user_id)
    # FOR NO KEY UPDATE: serialises the callers that lock, not grants' foreign-key checks.
    lock_mode = {"key_share": True} if lock else None
    user = session.get(User, user_id, with_for_update=lock_mode, populate_existing=lock)
    if user is None:
        raise UnknownUser(
            f"unknown user {user_id}: wa-access has never seen them "
            "(they must exist in the Slack workspace; operators can add them with "
            "`wa-access user add`)"
        )
    return user


def resolve_scope(session: Session, value: object, *, registered: bool = False) -> str:
    """`*`, an E.164 number, or a registered Graph phone-number id -> canonical scope.

    With `registered`, an E.164 number must be one the workspace knows: a grant
    on a number nobody registered (a typo, most often) would silently give
    nothing. Revoking and explaining accept any number, so a grant made on a
    number since removed can still be found and revoked.
    """
    scope = scope_without_lookup(value)
    if scope is None:  # a phone-number id
        text = str(value).strip()
        number = session.scalar(select(Number.e164).where(Number.phone_number_id == text))
        if number is None:
            raise _unknown_id(text)
        return number
    if scope != WILDCARD and registered and session.get(Number, scope) is None:
        raise _unregistered(scope)
    return scope


_BY_ID = Sql(select(Number.e164).where(Number.phone_number_id == bindparam("id")))
_NUMBER = Sql(select(Number.e164).where(Number.e164 == bindparam("e164")))


def registered_number(txn: Txn, value: object) -> str:
    """A registered business number given as E.164 (any common spelling) or by its
    phone-number id; UnknownNumber otherwise. `resolve_scope(registered=True)` for one
    number, on precompiled statements (the hot path of `/wa-send`)."""
    scope = scope_without_lookup(value)
    if scope is None:
        text = str(value).strip()
        row = txn.first(_BY_ID, {"id": text})
        if row is None:
            raise _unknown_id(text)
        return str(row[0])
    if scope == WILDCARD:
        raise UnknownNumber("* means every number: name one, in E.164 or by its phone-number id.")
    if txn.first(_NUMBER, {"e164": scope}) is None:
        raise _unregistered(scope)
    return scope


def _unknown_id(text: str) -> UnknownNumber:
    return UnknownNumber(
        f"'{text}' is not a registered phone-number id; "
        "give the number in E.164 form, e.g. +15550001111"
    )


def _unregistered(scope: str) -> UnknownNumber:
    return UnknownNumber(
        f"{scope} is not a registered WhatsApp number: an operator adds it with "
        f"`wa-access number add {scope} --id PHONE_NUMBER_ID`"
    )


def scope_without_lookup(value: object) -> str | None:
    """`resolve_scope`'s answer where it needs no database (`*`, an E.164 number in any
    common spelling); None for a phone-number id. Raises MalformedNumber as it does."""
    text = "" if value is None else str(value).strip()
    if text in ("", WILDCARD):
        return WILDCARD
    if is_phone_number_id(text):
        return None
    return parse_e164(text)


def register_number(
    session: Session,
    e164: str,
    phone_number_id: str | None = None,
    label: str | None = None,
    *,
    inbox_channel: str | None = None,
    send_rate: int | None = None,
) -> Number:
    """Register a number, or update what is given of one registered (None keeps a value)."""
    e164 = parse_e164(e164)
    number = session.get(Number, e164)
    if number is None:
        number = Number(
            e164=e164,
            phone_number_id=phone_number_id,
            label=label,
            inbox_channel=inbox_channel,
            send_rate=send_rate,
        )
        session.add(number)
    else:
        number.phone_number_id = phone_number_id or number.phone_number_id
        number.label = label or number.label
        number.inbox_channel = inbox_channel or number.inbox_channel
        number.send_rate = send_rate or number.send_rate
    session.flush()
    return number
