"""No command text, however malformed, escapes the parsers as anything but a usage error."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.commands import roles as role_command
from handlers.commands import twofa as twofa_command
from handlers.commands.grammar import UsageError, parse

WORDS = st.sampled_from(
    [
        "assign",
        "revoke",
        "show",
        "list",
        "create",
        "edit",
        "delete",
        "why",
        "help",
        "enroll",
        "verify",
        "status",
        "reset",
        "<@U0ALICE01>",
        "<@U0ALICE01|alice>",
        "<@W0BOB0001|>",
        "<@",
        "<@>",
        "@alice",
        "agent",
        "admin",
        "--number",
        "--for",
        "--reason",
        "--from",
        "--perms",
        "--inherits",
        "--uninherit",
        "--add",
        "--remove",
        "--2fa",
        "--2fa=on",
        "--number=+15550001111",
        "+1 555 000 1111",
        "30d",
        "4h",
        "0d",
        "-1h",
        '"',
        "'",
        "\u201c",
        "\u2019",
        "\\",
        "\x00",
        "\u202e",
        "roles:view",
        "nope:nope",
        "123456",
        "",
        " ",
        "\n",
    ]
)
COMMANDS = st.one_of(
    st.text(max_size=300),
    st.lists(WORDS, max_size=14).map(" ".join),
    st.lists(st.one_of(WORDS, st.text(max_size=8)), max_size=10).map(" ".join),
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=COMMANDS)
def test_ten_thousand_inputs_never_escape_the_parsers(text: str) -> None:
    for command, subcommands in (
        (role_command.COMMAND, role_command.SUBCOMMANDS),
        (twofa_command.COMMAND, twofa_command.SUBCOMMANDS),
    ):
        try:
            parse(command, text, subcommands)
        except UsageError as exc:
            assert exc.render().strip()
