"""People and numbers the core knows about, and scope resolution."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import UnknownNumber, UnknownUser
from .models import Number, User
from .values import WILDCARD, is_phone_number_id, parse_e164, parse_user_id


def ensure_user(session: Session, user_id: str, now: datetime, name: str | None = None) -> User:
    """Register a user a surface has verified (Slack users.info, an operator's CLI call)."""
    user_id = parse_user_id(user_id)
    user = session.get(User, user_id)
    if user is None:
        user = User(id=user_id, name=name, active=True, created_at=now)
        session.add(user)
        session.flush()
    elif name and user.name != name:
        user.name = name
    return user


def require_user(session: Session, user_id: str) -> User:
    user_id = parse_user_id(user_id)
    user = session.get(User, user_id)
    if user is None:
        raise UnknownUser(
            f"unknown user {user_id}: wa-access has never seen them "
            "(they must exist in the Slack workspace; operators can add them with "
            "`wa-access user add`)"
        )
    return user


def resolve_scope(session: Session, value: object) -> str:
    """`*`, an E.164 number, or a registered Graph phone-number id -> canonical scope."""
    text = "" if value is None else str(value).strip()
    if text in ("", WILDCARD):
        return WILDCARD
    if is_phone_number_id(text):
        number = session.scalar(select(Number.e164).where(Number.phone_number_id == text))
        if number is None:
            raise UnknownNumber(
                f"'{text}' is not a registered phone-number id; "
                "give the number in E.164 form, e.g. +15550001111"
            )
        return number
    return parse_e164(text)


def register_number(
    session: Session, e164: str, phone_number_id: str | None = None, label: str | None = None
) -> Number:
    e164 = parse_e164(e164)
    number = session.get(Number, e164)
    if number is None:
        number = Number(e164=e164, phone_number_id=phone_number_id, label=label)
        session.add(number)
    else:
        number.phone_number_id = phone_number_id or number.phone_number_id
        number.label = label or number.label
    session.flush()
    return number
