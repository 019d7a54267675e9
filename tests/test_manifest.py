"""manifest.yml is a Slack app manifest Slack's published schema accepts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

from handlers.commands.audit import COMMAND as AUDIT_COMMAND
from handlers.commands.roles import COMMAND
from handlers.commands.send import COMMAND as SEND_COMMAND
from handlers.commands.twofa import COMMAND as TWOFA_COMMAND

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "data" / "slack-app-manifest.schema.1.0.0.json"  # see its README


def _manifest() -> dict[str, object]:
    return yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))


def test_the_manifest_validates_against_slacks_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(Draft7Validator(schema).iter_errors(_manifest()), key=str)
    assert [e.message for e in errors] == []


def test_every_command_the_bot_serves_is_declared_and_escaped() -> None:
    commands = {c["command"]: c for c in _manifest()["features"]["slash_commands"]}  # type: ignore[index]
    assert {COMMAND, TWOFA_COMMAND, AUDIT_COMMAND, SEND_COMMAND} <= set(commands)
    for command in commands.values():
        assert command["should_escape"] is True  # mentions must arrive as <@U…> ids
        assert command["url"].endswith("/slack/events")
