"""The operator CLI: commands, console grammar, exit codes and configuration errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from rbac_core import Database

from .conftest import ADMIN, ALICE, BOB, CAROL, Cli
from .helpers import live_grants, notices


@pytest.fixture
def staffed(cli: Cli) -> Cli:
    assert cli("bootstrap-admin", ADMIN)[0] == 0
    assert cli("user", "add", ALICE, "--name", "alice")[0] == 0
    assert cli("user", "add", BOB)[0] == 0
    assert cli("number", "add", "+15550001111", "--id", "106540352242922")[0] == 0
    return cli


def test_migrate_is_idempotent(cli: Cli) -> None:
    code, out, _ = cli("migrate")
    from rbac_core.store.migrate import head_revision

    assert code == 0 and f"revision {head_revision()}" in out
    assert cli("migrate")[0] == 0


def test_bootstrap_admin_works_once(cli: Cli) -> None:
    code, out, _ = cli("bootstrap-admin", ADMIN)
    assert code == 0 and "is now an admin" in out
    code, _, err = cli("bootstrap-admin", ALICE)
    assert code == 1 and "already has an admin" in err


def test_bootstrap_admin_rejects_a_malformed_user_id(cli: Cli) -> None:
    code, _, err = cli("bootstrap-admin", "alice")
    assert code == 2 and "not a Slack user id" in err


def test_console_runs_commands_and_waits_for_confirmation(staffed: Cli, db: Database) -> None:
    script = (
        f"/wa-role assign <@{ALICE}|alice> agent --number +15550001111 --for 30d "
        "--reason covering the night shift\n"
        "confirm\n"
        f"/wa-role assign <@{BOB}> analyst\n"
        "cancel\n"
        f"/wa-role why <@{ALICE}> messages:send_text --number +15550001111\n"
    )
    code, out, _ = staffed("console", "--as", ADMIN, stdin=script)
    assert code == 0, out
    assert "Please confirm: assign agent to U0ALICE01 in +15550001111 for 30d" in out
    assert "Type confirm or cancel." in out
    assert "Assigned agent to U0ALICE01 in +15550001111" in out
    assert "Cancelled: assign analyst to U0BOB0001" in out
    assert "U0ALICE01 may use messages:send_text in +15550001111" in out
    assert live_grants(db) == [(ADMIN, "admin", "*"), (ALICE, "agent", "+15550001111")]


def test_console_help_hides_what_the_caller_may_not_do(staffed: Cli) -> None:
    _, admin_help, _ = staffed("console", "--as", ADMIN, stdin="/wa-role help\n")
    _, user_help, _ = staffed("console", "--as", ALICE, stdin="/wa-role\n")
    assert "/wa-role assign" in admin_help and "/wa-role delete" in admin_help
    # Alice has no grants yet: rule 1 leaves her show (on herself) and help.
    assert "/wa-role show" in user_help and "/wa-role help" in user_help
    for hidden in ("assign", "list", "why", "delete"):
        assert f"/wa-role {hidden}" not in user_help


@pytest.mark.parametrize(
    ("line", "message", "code"),
    [
        ("/wa-role frobnicate", "unknown subcommand 'frobnicate'", 2),
        ("/wa-role assign", "missing USER", 2),
        ("/wa-role assign @nobody agent", "nobody is registered as 'nobody'", 2),
        (f"/wa-role assign <@{ALICE}> agent --colour red", "unknown option --colour", 2),
        (f"/wa-role assign <@{ALICE}> agent --for", "--for needs a value", 2),
        (f'/wa-role assign <@{ALICE}> agent --reason "unclosed', "not closed", 2),
        (f"/wa-role assign <@{ALICE}> agent --for 3", "not a duration", 2),
        (f"/wa-role assign <@{ALICE}> agent --number 12", "not a phone number", 2),
        (f"/wa-role assign <@{ALICE}> wizard", "unknown role 'wizard'", 1),
        ("/wa-role assign <@U0NOBODY9> agent", "unknown user U0NOBODY9", 1),
        ("/wa-role why <@U0ALICE01> messages:teleport", "unknown permission", 1),
        ("/wa-role delete admin", "built-in role", 1),
        ("/wa-stats --since 7d", "unknown command '/wa-stats'", 2),
        ("/wa-send +16505551234", "say what to send", 2),
        ("/wa-send --template welcome", "whom to send to", 2),
        ("/wa-send 12 --template welcome", "not a phone number", 2),
        ("/wa-send +16505551234 hello", "within 24 hours", 1),
        ("confirm", "nothing waiting", 2),
    ],
)
def test_console_bad_input_gets_a_specific_message_and_exit_code(
    staffed: Cli, line: str, message: str, code: int
) -> None:
    got, out, _ = staffed("console", "--as", ADMIN, stdin=line + "\n")
    assert message in out
    assert got == code
    assert "Traceback" not in out


def test_console_refusals_exit_1(staffed: Cli) -> None:
    code, out, _ = staffed("console", "--as", ALICE, stdin="/wa-role list\n")
    assert code == 1 and "not allowed to list roles" in out


def test_console_rejects_a_malformed_actor(staffed: Cli) -> None:
    code, _, err = staffed("console", "--as", "root")
    assert code == 2 and "not a Slack user id" in err


def test_commands_refuse_an_unmigrated_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "verify"], out=io.StringIO()) == 1
    assert "run `wa-access migrate`" in capsys.readouterr().err


def test_serve_names_each_missing_setting_on_its_own_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "WA_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("WA_TIMEZONE", "Mars/Olympus")
    monkeypatch.chdir(tmp_path)
    assert main(["serve"], out=io.StringIO()) == 2
    assert capsys.readouterr().err.splitlines() == [
        "SLACK_SIGNING_SECRET is required but not set",
        "SLACK_BOT_TOKEN is required but not set",
        "WA_TIMEZONE is malformed: 'Mars/Olympus' is not an IANA time zone",
    ]


def test_an_unreachable_database_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    monkeypatch.chdir(tmp_path)
    assert main(["migrate"], out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err.startswith("database unavailable:") and "Traceback" not in err


def test_the_installed_console_script_runs_end_to_end(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("wa-access")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    assert run("migrate").returncode == 0
    assert run("bootstrap-admin", ADMIN).returncode == 0
    assert run("user", "add", ALICE).returncode == 0
    console = run("console", "--as", ADMIN, stdin=f"/wa-role assign <@{ALICE}> support\nconfirm\n")
    assert console.returncode == 0, console.stdout + console.stderr
    assert "Assigned support" in console.stdout
    verified = run("audit", "verify")
    assert verified.returncode == 0 and "intact: 4 entries" in verified.stdout
    assert run("frobnicate").returncode == 2


def test_reasons_may_contain_apostrophes_and_quotes_group_words(staffed: Cli, db: Database) -> None:
    script = (
        f"/wa-role assign <@{ALICE}> analyst --reason covering Bob\u2019s shift\nconfirm\n"
        f'/wa-role assign <@{BOB}> support --reason "two  spaces" --for 4h\nconfirm\n'
    )
    code, out, _ = staffed("console", "--as", ADMIN, stdin=script)
    assert code == 0, out
    _, shown, _ = staffed("console", "--as", ADMIN, stdin=f"/wa-role show <@{ALICE}>\n")
    assert "reason: covering Bob's shift" in shown
    _, shown, _ = staffed("console", "--as", ADMIN, stdin=f"/wa-role show <@{BOB}>\n")
    assert "reason: two  spaces" in shown


def test_export_to_an_unwritable_place_is_one_line_and_leaves_nothing(
    staffed: Cli, tmp_path: Path
) -> None:
    code, _, err = staffed("audit", "export", "--format", "csv", "-o", "/nonexistent/dir/a.csv")
    assert code == 1 and err.startswith("cannot write /nonexistent/dir/a.csv")
    code, _, err = staffed("audit", "export", "--format", "jsonl", "-o", str(tmp_path / "a.jsonl"))
    # the entries of `staffed`: the first admin, two people and one number
    assert code == 0 and "exported 4 entries" in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_numbers_are_registered_by_the_operator_and_usable_by_id(
    staffed: Cli, db: Database
) -> None:
    code, out, _ = staffed("number", "add", "+1 555 000 1111", "--id", "106540352242922")
    assert code == 0 and "+15550001111 (phone-number id 106540352242922)" in out
    code, _, err = staffed("number", "add", "555")
    assert code == 2 and "not a phone number" in err
    script = f"/wa-role assign <@{ALICE}> agent --number 106540352242922\nconfirm\n"
    assert staffed("console", "--as", ADMIN, stdin=script)[0] == 0
    assert (ALICE, "agent", "+15550001111") in live_grants(db)


def test_a_number_gets_its_inbox_channel_and_send_rate_and_bad_ones_are_refused(
    staffed: Cli,
) -> None:
    code, _, err = staffed(
        "number",
        "add",
        "+15550002222",
        "--id",
        "200100300400500",
        "--channel",
        "C0INBOX2",
        "--rate",
        "20",
    )
    assert code == 0, err
    row = [line.split() for line in staffed("number", "list")[1].splitlines()[1:]]
    assert ["+15550002222", "200100300400500", "-", "0", "C0INBOX2", "20", "on"] in row
    for flag, value, problem in (
        ("--channel", "#general", "not a Slack channel id"),
        ("--rate", "0", "send rate"),
        ("--rate", "1001", "send rate"),
        ("--rate", "fast", "send rate"),
    ):
        code, _, err = staffed("number", "add", "+15550002222", flag, value)
        assert code == 2 and problem in err, (flag, value, err)


def test_audit_run_prints_the_review_and_writes_every_finding_as_csv(
    staffed: Cli, tmp_path: Path
) -> None:
    # Alice's agent grant is brand new, so only the admin (admin needs 2FA) is reported.
    assert (
        staffed("console", "--as", ADMIN, stdin=f"/wa-role assign <@{ALICE}> agent\nconfirm\n")[0]
        == 0
    )
    code, out, _ = staffed("audit", "run", "--csv", "review.csv")
    assert code == 0, out
    assert "SLACK_BOT_TOKEN not set" in out
    assert "1 findings for 1 people (2 live grants checked, inactive = 30 days)" in out
    assert "1 holding a 2FA role without 2FA" in out
    rows = (tmp_path / "review.csv").read_text().splitlines()
    assert rows[0].startswith("position,finding,user,role,scope")
    assert rows[1].startswith(f"1,no_2fa,{ADMIN},admin,*")


def test_audit_run_rejects_bad_days_with_a_usage_error(staffed: Cli) -> None:
    with pytest.raises(SystemExit) as exit_:
        staffed("audit", "run", "--days", "0")
    assert exit_.value.code == 2


def test_scheduler_needs_the_bot_token_and_the_audit_channel(
    staffed: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("WA_AUDIT_CHANNEL", raising=False)
    code, _, err = staffed("scheduler")
    assert code == 2
    assert err.splitlines() == [
        "SLACK_BOT_TOKEN is required but not set",
        "WA_AUDIT_CHANNEL is required but not set",
    ]


def test_console_runs_wa_audit_through_the_same_gate(staffed: Cli) -> None:
    code, out, _ = staffed("console", "--as", ADMIN, stdin="/wa-audit verify\n/wa-audit inactive\n")
    assert code == 0, out
    assert "The audit log is intact:" in out
    assert f"1. no_2fa      {ADMIN} admin in *" in out
    code, out, _ = staffed("console", "--as", ALICE, stdin="/wa-audit log\n")
    assert code == 1 and "You are not allowed to read the audit log" in out
    # The console is the command line, but acting for a person: no operator rights.
    code, out, _ = staffed("console", "--as", ALICE, stdin="/wa-audit inactive\n")
    assert code == 1 and "You are not allowed to run the access review" in out


def test_a_refusal_followed_by_confirm_exits_1_not_as_a_usage_error(staffed: Cli) -> None:
    line = f"/wa-role assign <@{BOB}> agent\nconfirm\n"
    code, out, _ = staffed("console", "--as", ALICE, stdin=line)
    assert "not allowed" in out and "nothing waiting for confirmation" in out
    assert code == 1


def test_a_risky_command_left_unconfirmed_exits_1(staffed: Cli, db: Database) -> None:
    code, out, _ = staffed("console", "--as", ADMIN, stdin=f"/wa-role assign <@{BOB}> agent\n")
    assert "Please confirm" in out and "Nothing was done" in out
    assert code == 1
    assert live_grants(db, BOB) == []


@pytest.mark.parametrize("who", ["@alice", "@Alice", f"@{ALICE}", f"<@{ALICE}>", ALICE])
def test_the_console_takes_a_registered_name_or_an_id_where_slack_takes_a_mention(
    staffed: Cli, db: Database, who: str
) -> None:
    code, out, _ = staffed(
        "console", "--as", ADMIN, stdin=f"/wa-role assign {who} agent\nconfirm\n"
    )
    assert code == 0, out
    assert live_grants(db, ALICE) == [(ALICE, "agent", "*")]


def test_the_console_names_an_unknown_or_ambiguous_name(staffed: Cli) -> None:
    assert staffed("user", "add", CAROL, "--name", "alice")[0] == 0
    code, out, _ = staffed("console", "--as", ADMIN, stdin="/wa-role assign @alice agent\n")
    assert code == 2 and "2 people are registered as 'alice'" in out
    code, out, _ = staffed("console", "--as", ADMIN, stdin="/wa-role assign @zed agent\n")
    assert code == 2 and "nobody is registered as 'zed'" in out and "user add" in out


def test_a_request_from_the_console_is_queued_for_approvers_and_says_how_they_hear(
    staffed: Cli, db: Database
) -> None:
    staffed("console", "--as", ADMIN, stdin=f"/wa-role assign <@{ALICE}> support\nconfirm\n")
    line = "/wa-role request analyst --for 4h --reason covering\n"
    code, out, _ = staffed("console", "--as", ALICE, stdin=line)
    assert code == 0
    # Nothing is claimed as done: the notice waits in the outbox for a worker.
    assert "notified" not in out and "once a `wa-access serve` or `wa-access worker`" in out
    [(_, to, data)] = notices(db, "access.requested")
    assert to == "channel:audit" and data["requester"] == ALICE and data["role"] == "analyst"


def test_users_are_listed_and_removed_by_the_operator(staffed: Cli, db: Database) -> None:
    staffed("console", "--as", ADMIN, stdin=f"/wa-role assign <@{ALICE}> agent\nconfirm\n")
    code, out, _ = staffed("user", "list")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows[ALICE] == ["alice", "active", "1"] and rows[BOB] == ["-", "active", "0"]
    code, out, _ = staffed("user", "remove", ALICE)
    assert code == 0 and "none of their grants count" in out
    assert "removed" in staffed("user", "list")[1].splitlines()[2]
    code, _, err = staffed("user", "remove", ALICE)
    assert code == 1 and "already removed" in err
    code, _, err = staffed("user", "remove", ADMIN)
    assert code == 1 and "last" in err  # the last admin stays
    code, _, err = staffed("user", "remove", "nobody")
    assert code == 2 and "not a Slack user id" in err


def test_numbers_are_listed_and_removed_only_once_no_grant_counts_on_them(staffed: Cli) -> None:
    assign = "/wa-role assign @alice agent --number +15550001111\nconfirm\n"
    assert staffed("console", "--as", ADMIN, stdin=assign)[0] == 0
    code, out, _ = staffed("number", "list")
    assert code == 0 and out.splitlines()[1].split() == [
        "+15550001111",
        "106540352242922",
        "-",
        "1",
        "default",
        "default",
        "on",
    ]
    code, _, err = staffed("number", "remove", "106540352242922")
    assert code == 1 and "still has grants" in err and "agent" in err
    revoke = "/wa-role revoke @alice agent --number +15550001111\nconfirm\n"
    assert staffed("console", "--as", ADMIN, stdin=revoke)[0] == 0
    assert staffed("number", "remove", "+1 555 000 1111")[0] == 0
    assert len(staffed("number", "list")[1].splitlines()) == 1  # the header alone
    code, _, err = staffed("number", "remove", "+15550001111")
    assert code == 1 and "not a registered number" in err


def test_version_and_every_option_say_what_they_do(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith("wa-access ")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    shown = capsys.readouterr().out
    for option in ("--host HOST", "--port PORT", "--workers WORKERS"):
        assert option in shown
    assert "(default: 127.0.0.1)" in shown and "(default: 3000)" in shown
    with pytest.raises(SystemExit):
        build_parser().parse_args(["console", "--help"])
    shown = capsys.readouterr().out
    assert all(command in shown for command in ("/wa-role", "/wa-2fa", "/wa-audit"))


def test_python_dash_m_bot_cli_reports_errors_like_the_installed_command(
    tmp_path: Path, db_url: str
) -> None:
    """`python -m bot.cli` runs the module twice over (as __main__ and as bot.cli); errors
    raised in the subcommand modules used to escape as a traceback with exit 1."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "user", "add", "bogus"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "not a Slack user id" in done.stderr
    assert "Traceback" not in done.stderr
