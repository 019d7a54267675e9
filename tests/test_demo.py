"""`wa-access demo`: the whole flow against fake Slack and Meta, narrated, and a smoke test.

It must run anywhere with nothing set up and nothing taken from the shell it
runs in, say every scene, show no customer's number, leave nothing behind,
and fail (exit 1, with a ✗ line) when the product misbehaves.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from bot.demo.command import HELP

SCENES = (
    "1. The operator makes the first admin and registers the business number",
    "2. The admin (@dana) gives Alice and Bob their roles in Slack",
    "3. A customer writes to the business on WhatsApp",
    "4. Alice (agent) replies from Slack, and the sender delivers it to Meta",
    "5. Meta reports the reply's statuses, out of order",
    "6. What the gate refuses, and what it allows instead",
    "7. A send Meta refuses, explained to the person who sent it",
    "8. The admin checks the audit log from Slack",
)
CUSTOMERS = ("16505551234", "14155550123", "447700900123")

HOSTILE = {
    # A real deployment's settings, pointing nowhere the demo may go.
    "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=1",
    "SLACK_BOT_TOKEN": "junk",
    "SLACK_SIGNING_SECRET": "not-the-demo-secret",
    "SLACK_API_URL": "http://127.0.0.1:1/api/",
    "WA_AUDIT_CHANNEL": "not a channel",
    "WA_SECRET_KEY": "short",
    "WHATSAPP_APP_SECRET": "not-the-demo-secret",
    "WHATSAPP_ACCESS_TOKEN": "junk token",
    "WHATSAPP_API_URL": "http://127.0.0.1:1/v25.0",
    "WHATSAPP_PHONE_NUMBER_ID": "not digits",
    # Read by the libraries under the app themselves, not by Settings.
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "PROMETHEUS_MULTIPROC_DIR": "/nonexistent/wa-access-metrics",
}


def run_demo(
    monkeypatch: pytest.MonkeyPatch, folder: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`wa-access demo` in process, from `folder`: (exit code, stdout, stderr)."""
    monkeypatch.chdir(folder)
    out = io.StringIO()
    capsys.readouterr()
    code = main(["demo"], out=out)
    return code, out.getvalue(), capsys.readouterr().err


def scratch_of(output: str) -> Path:
    found = re.search(r"SQLite in (\S+)\)", output)
    assert found, output
    return Path(found.group(1))


def test_the_demo_plays_every_scene_with_nothing_taken_from_its_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in HOSTILE.items():
        monkeypatch.setenv(name, value)
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:////nonexistent/dir/x.db\n")
    code, out, err = run_demo(monkeypatch, tmp_path, capsys)
    assert code == 0, out + err
    headings = [line for line in out.splitlines() if re.match(r"\d+\. ", line)]
    assert headings == list(SCENES), out
    assert "✗" not in out
    assert re.search(r"All \d+ checks held", out), out
    for number in CUSTOMERS:
        assert number not in out  # shown masked, as the product shows them
    assert "+1 650•••1234" in out
    assert not scratch_of(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]  # nothing written here
    assert {name: os.environ.get(name) for name in HOSTILE} == HOSTILE  # put back after


def test_the_demo_shows_what_slack_and_meta_received(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_demo(monkeypatch, tmp_path, capsys)
    assert code == 0, out
    assert "@dana assigned *agent* to @alice in +15550001111." in out  # the audit channel
    assert '"biz_opaque_callback_data": "' in out  # what Meta received
    assert re.search(r"message \d+ is now read", out)
    assert "you need messages:send_text" in out
    assert "within 24 hours of their last message" in out
    assert re.search(r"DM to @alice:\n\s+:x: Your message in conversation C-\d+ .*131026", out)
    assert re.search(r"The audit log is intact: \d+ entries", out)
    assert "0 of the 3 customers' numbers in it" in out


def test_the_demo_fails_when_the_product_misbehaves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Statuses that no longer move messages forward: the demo must say so and exit 1."""
    from rbac_core.messaging.intake import Intake

    monkeypatch.setattr(Intake, "_advance", lambda self, event, rank, error: None)
    code, out, _ = run_demo(monkeypatch, tmp_path, capsys)
    assert code == 1
    assert "   ✗ the message ended sent, not read" in out
    assert re.search(r"✗ \d+ of \d+ checks failed", out)
    assert "8. The admin checks the audit log from Slack" in out  # the other scenes still ran
    assert not scratch_of(out).exists()


def test_a_scene_that_breaks_stops_the_demo_and_everything_is_taken_down(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.whatsapp.sender import WhatsAppSender

    def broken(self: WhatsAppSender) -> int:
        raise RuntimeError("the sender broke")

    monkeypatch.setattr(WhatsAppSender, "run_once", broken)
    code, out, err = run_demo(monkeypatch, tmp_path, capsys)
    assert code == 1
    assert "✗ the demo stopped in scene 4: RuntimeError: the sender broke" in out
    assert "5. " not in out
    assert "RuntimeError" in err  # the traceback, for whoever debugs it
    assert not scratch_of(out).exists()
    assert "still answers" not in out  # the servers were stopped


def test_the_cli_lists_the_demo() -> None:
    assert HELP in " ".join(build_parser().format_help().split())
