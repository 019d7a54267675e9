"""Settings from the environment (SPEC §9), validated once at start-up.

Every problem is reported on its own line naming the variable, all at once, so
an operator fixes their configuration in one pass. Secrets are kept out of
`repr`, so a logged Settings object leaks nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rbac_core.store.dialects import normalize_url

DEFAULT_DATABASE_URL = "sqlite:///wa_access.db"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_WHATSAPP_API_URL = "https://graph.facebook.com/v25.0"

DEFAULT_AUDIT_SCHEDULE = "0 9 * * mon"  # crontab: Monday 09:00 in WA_TIMEZONE
DEFAULT_INACTIVE_DAYS = 30
DEFAULT_GRACE_HOURS = 24  # a scheduler down at 09:00 still runs the review if back within this

DEFAULT_SEND_RATE = 80  # messages a second per number: Meta's default throughput

SERVE_REQUIRES = ("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN")

_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}")


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_api_url: str = DEFAULT_SLACK_API_URL
    audit_channel: str | None = None
    alert_channel: str | None = None
    timezone: str = "UTC"
    secret_key: str | None = field(default=None, repr=False)
    whatsapp_app_secret: str | None = field(default=None, repr=False)
    whatsapp_verify_token: str | None = field(default=None, repr=False)
    whatsapp_access_token: str | None = field(default=None, repr=False)
    whatsapp_waba_id: str | None = None
    whatsapp_phone_number_id: str | None = None
    whatsapp_api_url: str = DEFAULT_WHATSAPP_API_URL
    audit_schedule: str = DEFAULT_AUDIT_SCHEDULE
    audit_inactive_days: int = DEFAULT_INACTIVE_DAYS
    audit_grace_hours: int = DEFAULT_GRACE_HOURS
    log_format: str = "text"
    metrics_token: str | None = field(default=None, repr=False)
    audit_checkpoint_file: str | None = None
    inbox_channel: str | None = None
    send_rate: int = DEFAULT_SEND_RATE


ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_api_url": "SLACK_API_URL",
    "audit_channel": "WA_AUDIT_CHANNEL",
    "alert_channel": "WA_ALERT_CHANNEL",
    "timezone": "WA_TIMEZONE",
    "secret_key": "WA_SECRET_KEY",
    "whatsapp_app_secret": "WHATSAPP_APP_SECRET",
    "whatsapp_verify_token": "WHATSAPP_VERIFY_TOKEN",
    "whatsapp_access_token": "WHATSAPP_ACCESS_TOKEN",
    "whatsapp_waba_id": "WHATSAPP_WABA_ID",
    "whatsapp_phone_number_id": "WHATSAPP_PHONE_NUMBER_ID",
    "whatsapp_api_url": "WHATSAPP_API_URL",
    "audit_schedule": "WA_AUDIT_SCHEDULE",
    "audit_inactive_days": "WA_AUDIT_INACTIVE_DAYS",
    "audit_grace_hours": "WA_AUDIT_GRACE_HOURS",
    "log_format": "WA_LOG_FORMAT",
    "metrics_token": "WA_METRICS_TOKEN",
    "audit_checkpoint_file": "WA_AUDIT_CHECKPOINT_FILE",
    "inbox_channel": "WA_INBOX_CHANNEL",
    "send_rate": "WA_SEND_RATE",
}


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> dict[str, str]:
    """The process environment over a `.env` file, if one is present."""
    values: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def _check_url(name: str, value: str, problems: list[str]) -> None:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(f"{name} is malformed: expected an http(s) URL, got '{value}'")


def _check_database_url(url: str, problems: list[str]) -> None:
    expected = "expected sqlite:///FILE or postgresql://USER@HOST:PORT/DB"
    try:
        parsed = make_url(normalize_url(url))
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
            raise ValueError(parsed.drivername)
        parsed.port  # noqa: B018 - a non-numeric port raises here
    except (ArgumentError, ValueError):
        problems.append(f"DATABASE_URL is malformed: {expected}")


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    require: Iterable[str] = (),
    dotenv: Path | None = Path(".env"),
) -> Settings:
    env = read_environment(environ, dotenv)
    problems: list[str] = []
    values: dict[str, str] = {}
    for attr in (f.name for f in fields(Settings)):
        raw = env.get(ENV_NAMES[attr])
        if raw is not None and raw.strip() != "":
            values[attr] = raw.strip()
    for name in require:
        if not env.get(name, "").strip():
            problems.append(f"{name} is required but not set")

    _check_database_url(values.get("database_url", DEFAULT_DATABASE_URL), problems)
    for attr in ("slack_api_url", "whatsapp_api_url"):
        if attr in values:
            _check_url(ENV_NAMES[attr], values[attr], problems)
    token = values.get("slack_bot_token")
    if token is not None and not token.startswith("xoxb-"):
        problems.append("SLACK_BOT_TOKEN is malformed: a bot token starts with xoxb-")
    for attr in ("audit_channel", "alert_channel", "inbox_channel"):
        channel = values.get(attr)
        if channel is not None and not _CHANNEL.fullmatch(channel):
            problems.append(
                f"{ENV_NAMES[attr]} is malformed: expected a channel id like C0123ABC, "
                f"got '{channel}'"
            )
    tz = values.get("timezone")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"WA_TIMEZONE is malformed: '{tz}' is not an IANA time zone")
    key = values.get("secret_key")
    if key is not None and len(key) < 32:
        problems.append("WA_SECRET_KEY is malformed: it must be at least 32 characters")
    for attr in ("whatsapp_phone_number_id", "whatsapp_waba_id"):
        ident = values.get(attr)
        if ident is not None and not (ident.isascii() and ident.isdigit()):
            problems.append(f"{ENV_NAMES[attr]} is malformed: expected digits, got '{ident}'")
    _check_schedule(values, problems)
    webhook = (values.get("whatsapp_app_secret"), values.get("whatsapp_verify_token"))
    if any(webhook) and not all(webhook):
        problems.append(
            "WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN go together: set both, or neither"
        )
    if values.get("log_format", "text") not in ("text", "json"):
        problems.append(
            f"WA_LOG_FORMAT is malformed: expected text or json, got '{values['log_format']}'"
        )
    if len(values.get("metrics_token", "x" * 16)) < 16:
        problems.append("WA_METRICS_TOKEN is malformed: it must be at least 16 characters")
    checkpoints = values.get("audit_checkpoint_file")
    if checkpoints is not None and Path(checkpoints).is_dir():
        problems.append(
            f"WA_AUDIT_CHECKPOINT_FILE is malformed: '{checkpoints}' is a directory, not a file"
        )
    typed: dict[str, object] = dict(values)
    for attr, low, high in (
        ("audit_inactive_days", 1, 3650),
        ("audit_grace_hours", 1, 24 * 7),
        ("send_rate", 1, 1000),
    ):
        if attr in values:
            raw = values[attr]
            if not (raw.isascii() and raw.isdigit() and len(raw) < 12 and low <= int(raw) <= high):
                problems.append(
                    f"{ENV_NAMES[attr]} is malformed: expected a whole number from {low} to "
                    f"{high}, got '{raw}'"
                )
            else:
                typed[attr] = int(raw)
    if problems:
        raise ConfigError(problems)
    return Settings(**typed)  # type: ignore[arg-type]


def _check_schedule(values: Mapping[str, str], problems: list[str]) -> None:
    expression = values.get("audit_schedule")
    if expression is None:
        return
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError:
        problems.append(
            "WA_AUDIT_SCHEDULE is malformed: expected a crontab line such as "
            f"'0 9 * * mon', got '{expression}'"
        )
