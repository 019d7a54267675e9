"""Settings from the environment: defaults, validation, and secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import SERVE_REQUIRES, ConfigError, load_settings


def test_defaults_need_nothing_but_give_sqlite() -> None:
    settings = load_settings({}, dotenv=None)
    assert settings.database_url == "sqlite:///wa_access.db"
    assert settings.slack_api_url == "https://slack.com/api/"
    # SPEC §9: the Graph version is pinned in the URL; v21 is retired in January 2027.
    assert settings.whatsapp_api_url == "https://graph.facebook.com/v25.0"
    assert settings.timezone == "UTC"


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    env = {
        "DATABASE_URL": "mysql://x/y",
        "SLACK_API_URL": "not a url",
        "SLACK_BOT_TOKEN": "xoxp-user-token",
        "WA_AUDIT_CHANNEL": "#wa-access",
        "WA_SECRET_KEY": "short",
        "WHATSAPP_PHONE_NUMBER_ID": "+1555",
    }
    with pytest.raises(ConfigError) as err:
        load_settings(env, require=SERVE_REQUIRES, dotenv=None)
    problems = err.value.problems
    assert problems[0] == "SLACK_SIGNING_SECRET is required but not set"
    joined = "\n".join(problems)
    for name in (
        "DATABASE_URL",
        "SLACK_API_URL",
        "SLACK_BOT_TOKEN",
        "WA_AUDIT_CHANNEL",
        "WA_SECRET_KEY",
        "WHATSAPP_PHONE_NUMBER_ID",
    ):
        assert f"{name} is malformed" in joined
    assert len(problems) == 7


def test_a_dotenv_file_is_read_but_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("WA_TIMEZONE=Europe/Paris\nWA_AUDIT_CHANNEL=C0AUDIT01\n")
    settings = load_settings({"WA_TIMEZONE": "Asia/Tokyo"}, dotenv=dotenv)
    assert settings.timezone == "Asia/Tokyo"
    assert settings.audit_channel == "C0AUDIT01"


def test_secrets_never_appear_in_the_settings_repr() -> None:
    settings = load_settings(
        {
            "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
            "SLACK_BOT_TOKEN": "xoxb-1-secret",
            "WA_SECRET_KEY": "k" * 40,
        },
        dotenv=None,
    )
    text = repr(settings)
    assert "8f742231" not in text and "xoxb-1-secret" not in text and "kkkk" not in text


@pytest.mark.parametrize("given", ["WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"])
def test_the_webhook_needs_both_its_secret_and_its_verify_token(given: str) -> None:
    """With one alone the route would be silently missing: say so at start-up."""
    with pytest.raises(ConfigError) as refused:
        load_settings({given: "something-long-enough"}, dotenv=None)
    assert "WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN go together" in str(refused.value)
