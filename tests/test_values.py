"""What counts as a number, a duration, a user id and a role name."""

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rbac_core.errors import (
    MalformedDuration,
    MalformedNumber,
    MalformedRoleName,
    MalformedUserId,
    UnknownPermission,
)
from rbac_core.policy.catalogue import PERMISSIONS, check_permission
from rbac_core.values import (
    format_duration,
    format_moment,
    parse_duration,
    parse_e164,
    parse_role_name,
    parse_user_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("4h", timedelta(hours=4)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_durations_use_a_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d30", "30x", "-1d", "0h", "1.5d", "400d", "3 days"])
def test_malformed_durations_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(MalformedDuration) as err:
        parse_duration(text)
    assert err.value.exit_code == 2


def test_durations_print_in_their_largest_whole_unit() -> None:
    assert format_duration(timedelta(days=14)) == "2w"
    assert format_duration(timedelta(hours=36)) == "36h"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+15550001111", "+15550001111"),
        ("+1 555-000 1111", "+15550001111"),
        ("+44 (20) 7946.0958", "+442079460958"),
    ],
)
def test_phone_numbers_are_canonical_e164(text: str, expected: str) -> None:
    assert parse_e164(text) == expected


@pytest.mark.parametrize("text", ["15550001111", "+0123456789", "+1", "+1234567890123456", "abc"])
def test_malformed_phone_numbers_are_refused(text: str) -> None:
    with pytest.raises(MalformedNumber, match=r"E\.164"):
        parse_e164(text)


def test_user_ids_are_slack_ids_never_display_names() -> None:
    assert parse_user_id("U0123ABC") == "U0123ABC"
    assert parse_user_id("W0123ABC") == "W0123ABC"
    for bad in ("alice", "@alice", "u0123abc", "C0123ABC", ""):
        with pytest.raises(MalformedUserId):
            parse_user_id(bad)


def test_role_names_are_short_slugs() -> None:
    assert parse_role_name("Campaign-Manager") == "campaign-manager"
    for bad in ("x", "1abc", "a b", "a" * 41, "drop;table"):
        with pytest.raises(MalformedRoleName):
            parse_role_name(bad)


def test_the_catalogue_is_closed_and_suggests_near_misses() -> None:
    assert len(PERMISSIONS) == 38
    assert check_permission("roles:assign") == "roles:assign"
    with pytest.raises(UnknownPermission, match="roles:assign"):
        check_permission("roles:asign")


def test_a_moment_is_written_in_utc_to_the_minute_whatever_its_zone() -> None:
    rng = random.Random(20261205)
    for _ in range(5000):
        moment = datetime.fromtimestamp(rng.uniform(0, 4e9), UTC)
        zoned = moment.astimezone(timezone(timedelta(minutes=15 * rng.randint(-48, 56))))
        expected = moment.strftime("%Y-%m-%d %H:%M UTC")
        assert format_moment(zoned) == expected
        assert format_moment(moment.timestamp()) == expected
    assert format_moment(None) == "never"
