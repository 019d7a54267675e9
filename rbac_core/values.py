"""Parsing of the small values every surface passes to the core.

Each parser either returns a canonical value or raises a specific InvalidInput,
so "malformed number" and "malformed duration" read the same from Slack, the CLI
or an HTTP caller.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import (
    InvalidInput,
    MalformedDuration,
    MalformedNumber,
    MalformedRoleName,
    MalformedUserId,
)

WILDCARD = "*"

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PHONE_NUMBER_ID = re.compile(r"[0-9]{6,20}")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]{1,39}")
_DURATION = re.compile(r"([0-9]{1,6})([mhdw])")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = timedelta(days=366)


def parse_e164(text: str) -> str:
    """Canonical E.164 (`+` and 7 to 15 digits); spaces, dots and dashes are tolerated."""
    compact = re.sub(r"[\s().-]", "", str(text))
    if _E164.fullmatch(compact):
        return compact
    raise MalformedNumber(
        f"'{text}' is not a phone number: use E.164 with the country code, e.g. +15550001111"
    )


def masked_phone(e164: str) -> str:
    """A customer's number as people without `customers:view_pii` see it: country and
    area, then the last four digits (`+1 650•••1234`)."""
    digits = e164.lstrip("+")
    if len(digits) < 8:
        return "+" + "•" * len(digits)
    head, tail = digits[: len(digits) - 7], digits[-4:]
    if len(digits) == 11 and digits.startswith("1"):  # the North American plan: +1 AAA
        head = f"1 {head[1:]}"
    return f"+{head}•••{tail}"


def is_phone_number_id(text: str) -> bool:
    """True for what looks like a Graph phone-number id (digits only, no `+`)."""
    return _PHONE_NUMBER_ID.fullmatch(text) is not None


def is_user_id(text: str) -> bool:
    """True for a Slack user id (`U…` or `W…`)."""
    return _USER_ID.fullmatch(text) is not None


def parse_user_id(text: str) -> str:
    """A Slack user id (`U…` or `W…`); display names are never accepted as identity."""
    if isinstance(text, str) and is_user_id(text):
        return text
    raise MalformedUserId(
        f"'{text}' is not a Slack user id: mention the person (@name) or give an id like U0123ABC"
    )


def parse_role_name(text: str) -> str:
    name = str(text).strip().lower()
    if _ROLE_NAME.fullmatch(name):
        return name
    raise MalformedRoleName(
        f"'{text}' is not a valid role name: 2-40 characters, starting with a letter, "
        "then letters, digits, '-' or '_'"
    )


def parse_duration(text: str) -> timedelta:
    """`90m`, `4h`, `30d` or `2w`; zero and anything beyond a year are refused."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise MalformedDuration(
            f"'{text}' is not a duration: use a number and a unit, e.g. 90m, 4h, 30d or 2w"
        )
    value = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if value <= timedelta(0):
        raise MalformedDuration(f"'{text}' is not a duration: it must be longer than zero")
    if value > MAX_DURATION:
        raise MalformedDuration(f"'{text}' is too long: time-bound access is limited to 366 days")
    return value


BIGINT_MAX = 2**63 - 1  # the largest value of a 64-bit integer column (audit seq)
INT_MAX = 2**31 - 1  # the largest value of a plain integer column (ids)
_WHOLE = re.compile(r"[0-9]{1,19}")


def parse_whole_number(value: object, problem: str, *, low: int, high: int) -> int:
    """A whole number from outside (a flag, a button's value) within [low, high].

    Every integer a person or a payload supplies passes here before it reaches
    a query: past a column's range PostgreSQL aborts the whole transaction
    (taking the audit entry with it) and SQLite's driver raises OverflowError.
    Anything else, a bool, a float, a sign or 10**30 included, is `problem`.
    """
    text = value if isinstance(value, str) else str(value) if type(value) is int else ""
    text = text.strip()
    if not _WHOLE.fullmatch(text):
        raise InvalidInput(problem)
    number = int(text)
    if not low <= number <= high:
        raise InvalidInput(problem)
    return number


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(value: object, field: str, max_length: int) -> str | None:
    """Free text (a reason, a description, a name): trimmed, bounded, printable.

    Refused rather than silently cut, and control characters refused because
    they behave differently on SQLite and PostgreSQL (PostgreSQL rejects NUL).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"the {field} must be text")
    text = value.strip()
    if len(text) > max_length:
        raise InvalidInput(
            f"the {field} is too long ({len(text)} characters, at most {max_length})"
        )
    if _CONTROL.search(text):
        raise InvalidInput(f"the {field} contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"the {field} is not valid text") from None
    return text or None


_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})


def parse_flag(value: object, field: str) -> bool | None:
    """A yes/no option from any surface: a real bool, or on/off, true/false, yes/no."""
    if value is None or isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidInput(f"{field} takes on or off, not '{value}'")


def scope_text(scope: str) -> str:
    """A scope as people read it."""
    return "the whole workspace" if scope == WILDCARD else scope


def for_scope(scope: str) -> str:
    """' for +1555…', or nothing for the whole workspace: to append to a sentence."""
    return "" if scope == WILDCARD else f" for {scope}"


def format_moment(moment: datetime | float | None) -> str:
    if moment is None:
        return "never"
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    m = moment.astimezone(UTC)  # written out: strftime cost a /wa-role show 1% per date
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d} {m.hour:02d}:{m.minute:02d} UTC"


# A scheduled period's name in `job_runs`.
_PERIOD_FORMAT = "%Y-%m-%dT%H:%MZ"


def period_key(moment: datetime) -> str:
    """A period's name in `job_runs`: its scheduled start, in UTC, to the minute."""
    return moment.astimezone(UTC).strftime(_PERIOD_FORMAT)


def period_start(key: str) -> datetime | None:
    """The moment a period key names; None for a key `period_key` did not write."""
    try:
        return datetime.strptime(key, _PERIOD_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
